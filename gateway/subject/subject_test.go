package subject_test

import (
	"strings"
	"testing"

	"github.com/edgegw/edgegw/gateway/subject"
)

func TestSubjectMapping(t *testing.T) {
	tests := []struct {
		tmpl, topic, want string
		wantErr           string
	}{
		{"telemetry.{gateway}.{topic}", "sensors/lobby/temp", "telemetry.gw1.sensors.lobby.temp", ""},
		{"telemetry.{gateway}.{level2}", "sensors/lobby/temp", "telemetry.gw1.lobby", ""},
		{"t.{level3}.{level1}", "a/b/c", "t.c.a", ""},
		{"telemetry.{gateway}.{topic}", "a.b/c*/>/d e", "telemetry.gw1.a%2Eb.c%2A.%3E.d%20e", ""},
		{"telemetry.{gateway}.{topic}", "a//b", "telemetry.gw1.a.%.b", ""},
		{"telemetry.{gateway}.{topic}", "/leading", "telemetry.gw1.%.leading", ""},
		{"telemetry.{gateway}.{topic}", "trailing/", "telemetry.gw1.trailing.%", ""},
		{"telemetry.{gateway}.{topic}", "tab\there/nl\n/nul\x00", "telemetry.gw1.tab%09here.nl%0A.nul%00", ""},
		{"telemetry.{gateway}.{topic}", "100%/$SYS/ünï", "telemetry.gw1.100%25.%24SYS.%C3%BCn%C3%AF", ""},
		{"telemetry.{gateway}.{level4}", "a/b", "", "has 2 levels"},
		{"telemetry.{gateway}.{topic}", "", "", "empty topic"},
		{"telemetry.{gateway}.{topic}", strings.Repeat("x/", 600), "", "longer than"},
	}
	for _, tt := range tests {
		tmpl, err := subject.ParseTemplate(tt.tmpl, "gw1")
		if err != nil {
			t.Fatalf("ParseTemplate(%q): %v", tt.tmpl, err)
		}
		got, err := tmpl.Subject(tt.topic)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Subject(%q): %q, %v; want error with %q", tt.topic, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%s / %q: %q, %v; want %q", tt.tmpl, tt.topic, got, err, tt.want)
		}
	}
}

func TestBadTemplates(t *testing.T) {
	for _, tmpl := range []string{"", "a..b", "a.*", "a.>", "a.{topic}.{topic}", "a.{nope}", "a.{level0}", "a.x{topic}", "$JS.API.{topic}", "a b.{topic}"} {
		if _, err := subject.ParseTemplate(tmpl, "gw1"); err == nil {
			t.Errorf("ParseTemplate(%q): no error", tmpl)
		}
	}
	if _, err := subject.ParseTemplate("t.{gateway}", "gw.1"); err == nil {
		t.Error("a gateway id with a dot: no error")
	}
}

func TestFilter(t *testing.T) {
	for tmpl, want := range map[string]string{
		"telemetry.{gateway}.{topic}":  "telemetry.gw1.>",
		"telemetry.{gateway}.{level2}": "telemetry.gw1.*",
		"telemetry.{topic}.{gateway}":  "telemetry.>",
		"x.{level1}.{gateway}.raw":     "x.*.gw1.raw",
	} {
		tp, err := subject.ParseTemplate(tmpl, "gw1")
		if err != nil {
			t.Fatal(err)
		}
		if got := tp.Filter(); got != want {
			t.Errorf("%s: filter %q, want %q", tmpl, got, want)
		}
	}
}

// FuzzSubject: whatever the topic, the subject is a valid NATS subject to
// publish to, stays inside the template, and gives the topic back.
func FuzzSubject(f *testing.F) {
	for _, s := range []string{"a/b/c", "a//b", "/", "", ".", "*", ">", "#", "+", "a b", "\x00", "%", "%41", "ü/ß", "$SYS/x"} {
		f.Add(s)
	}
	tmpl, err := subject.ParseTemplate("telemetry.{gateway}.{topic}", "gw1")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		subj, err := tmpl.Subject(topic)
		if err != nil {
			return
		}
		if !strings.HasPrefix(subj, "telemetry.gw1.") {
			t.Fatalf("%q -> %q: outside the template", topic, subj)
		}
		toks := strings.Split(subj, ".")
		for _, tok := range toks {
			if tok == "" || tok == "*" || tok == ">" {
				t.Fatalf("%q -> %q: token %q", topic, subj, tok)
			}
			for i := 0; i < len(tok); i++ {
				if c := tok[i]; c <= ' ' || c >= 0x7f {
					t.Fatalf("%q -> %q: byte %#x in a token", topic, subj, c)
				}
			}
		}
		var levels []string
		for _, tok := range toks[2:] {
			l, err := subject.UnescapeLevel(tok)
			if err != nil {
				t.Fatalf("%q -> %q: %v", topic, subj, err)
			}
			levels = append(levels, l)
		}
		if back := strings.Join(levels, "/"); back != topic {
			t.Fatalf("%q -> %q -> %q: not injective", topic, subj, back)
		}
	})
}
