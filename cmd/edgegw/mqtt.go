package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/edgegw/edgegw/gateway/mqttbroker"
)

// cmdHashPassword prints the bcrypt hash of a device's password for the
// embedded broker's users file (mqtt.server.users_file). The password is
// the first line of --password-file, or of stdin: never an argument,
// which other users of the box could read in the process list.
func cmdHashPassword(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flags("mqtt hash-password", stderr)
	file := fs.String("password-file", "", "read the password from the first line of FILE instead of stdin")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	in := stdin
	if *file != "" {
		f, err := os.Open(*file)
		if err != nil {
			fmt.Fprintln(stderr, "edgegw:", err)
			return 1
		}
		defer f.Close()
		in = f
	}
	line, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && err != io.EOF {
		fmt.Fprintln(stderr, "edgegw: read the password:", err)
		return 1
	}
	h, err := mqttbroker.HashPassword(strings.TrimRight(line, "\r\n"))
	if err != nil {
		fmt.Fprintln(stderr, "edgegw: hash the password:", err, "(give it on stdin or with --password-file)")
		return 1
	}
	fmt.Fprintln(stdout, h)
	return 0
}
