// Package importrules checks the import rules of shared/DESIGN.md over the
// whole module (go list -deps), so that CI fails when a package reaches
// across a boundary.
package importrules

import (
	"bytes"
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/mediafleet/mediafleet"

type pkg struct {
	ImportPath string
	Deps       []string
	Standard   bool
}

func listPackages(t *testing.T, tags string) []pkg {
	t.Helper()
	args := []string{"list", "-deps=false", "-json"}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	cmd := exec.Command("go", append(args, module+"/...")...)
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 10 {
		t.Fatalf("go list found %d packages", len(pkgs))
	}
	return pkgs
}

func under(path, prefix string) bool {
	return path == module+"/"+prefix || strings.HasPrefix(path, module+"/"+prefix+"/")
}

// isStd says whether an import path is the standard library's (no dot in
// its first element).
func isStd(path string) bool {
	first, _, _ := strings.Cut(path, "/")
	return !strings.Contains(first, ".")
}

// rule says what a package may not depend on (transitively).
type rule struct {
	name    string
	applies func(string) bool
	forbids func(dep string) bool
}

var rules = []rule{
	{"api imports neither controllers nor mediaserver, nor controller-runtime (API packages stay cheap to import)",
		func(p string) bool { return under(p, "api") },
		func(d string) bool {
			return under(d, "controllers") || under(d, "mediaserver") || strings.HasPrefix(d, "sigs.k8s.io/controller-runtime")
		}},
	{"mediaserver never imports controllers or controller-runtime",
		func(p string) bool { return under(p, "mediaserver") || p == module+"/cmd/mediaserver" },
		func(d string) bool {
			return under(d, "controllers") || strings.HasPrefix(d, "sigs.k8s.io/controller-runtime") || under(d, "api")
		}},
	{"controllers import no mediaserver package but the two contracts (podenv, statusapi)",
		func(p string) bool { return under(p, "controllers") || p == module+"/cmd/manager" },
		func(d string) bool {
			return under(d, "mediaserver") && !under(d, "mediaserver/podenv") && !under(d, "mediaserver/statusapi")
		}},
	{"controllers/desired is pure builders: neither controller-runtime nor the reconciler",
		func(p string) bool { return under(p, "controllers/desired") },
		func(d string) bool {
			return d == module+"/controllers" || strings.HasPrefix(d, "sigs.k8s.io/controller-runtime")
		}},
	{"the two contracts depend on the standard library only",
		func(p string) bool { return under(p, "mediaserver/podenv") || under(p, "mediaserver/statusapi") },
		func(d string) bool { return !isStd(d) }},
}

// TestImportRules: no package breaks a rule, with or without the build
// tags the project uses.
func TestImportRules(t *testing.T) {
	for _, tags := range []string{"", "faultinject", "e2e"} {
		checked := 0
		for _, p := range listPackages(t, tags) {
			for _, r := range rules {
				if !r.applies(p.ImportPath) {
					continue
				}
				checked++
				for _, d := range p.Deps {
					if r.forbids(d) {
						t.Errorf("%s (tags %q) depends on %s: %s", p.ImportPath, tags, d, r.name)
					}
				}
			}
		}
		if checked < 10 {
			t.Errorf("only %d package/rule pairs checked with tags %q: the rules match nothing", checked, tags)
		}
	}
}

// TestRulesCatchABreak: each rule forbids what it names (a rule that
// forbids nothing would pass silently).
func TestRulesCatchABreak(t *testing.T) {
	breaks := map[string]string{
		rules[0].name: module + "/controllers",
		rules[1].name: "sigs.k8s.io/controller-runtime/pkg/client",
		rules[2].name: module + "/mediaserver/rtc",
		rules[3].name: "sigs.k8s.io/controller-runtime/pkg/client",
		rules[4].name: "github.com/pion/webrtc/v4",
	}
	for _, r := range rules {
		if !r.forbids(breaks[r.name]) {
			t.Errorf("rule %q lets %s through", r.name, breaks[r.name])
		}
	}
	if rules[2].forbids(module+"/mediaserver/statusapi") || rules[3].forbids("encoding/json") {
		t.Error("a rule forbids what is allowed")
	}
}
