package subject

import (
	"fmt"
	"strconv"
	"strings"
)

// What the tests use and nothing else does.

// UnescapeLevel is the inverse of EscapeLevel.
func UnescapeLevel(tok string) (string, error) {
	if tok == "%" {
		return "", nil
	}
	if !strings.Contains(tok, "%") {
		return tok, nil
	}
	out := make([]byte, 0, len(tok))
	for i := 0; i < len(tok); i++ {
		if tok[i] != '%' {
			out = append(out, tok[i])
			continue
		}
		if i+2 >= len(tok) {
			return "", fmt.Errorf("token %q: truncated escape", tok)
		}
		v, err := strconv.ParseUint(tok[i+1:i+3], 16, 8)
		if err != nil {
			return "", fmt.Errorf("token %q: bad escape %q", tok, tok[i:i+3])
		}
		out = append(out, byte(v))
		i += 2
	}
	return string(out), nil
}
