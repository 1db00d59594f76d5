package mqttbroker

// Covers and ClientIDAllowed are the ACL's rules, for the tests.
var Covers = covers

func ClientIDAllowed(u *User, id string) bool { return clientIDAllowed(u, id) }
