package main

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/kubeskel/kubeskel/internal/config"
)

// TestREADMEConfigTable fails when the README's configuration table and the
// variables the binary reads (what -h prints) disagree. Run it with
// UPDATE_README=1 to rewrite the table.
func TestREADMEConfigTable(t *testing.T) {
	const path = "../../README.md"
	const begin, end = "<!-- config-table:begin -->\n", "<!-- config-table:end -->"
	readme, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(readme)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		t.Fatalf("README.md lacks the %q ... %q markers", begin, end)
	}
	var b strings.Builder
	b.WriteString("| Variable | Type | Default | Description |\n|---|---|---|---|\n")
	for _, v := range config.Variables() {
		def := v.Default
		if def == "" {
			def = "(unset)"
		}
		fmt.Fprintf(&b, "| `%s` | %s | `%s` | %s |\n", v.Name, v.Type, def, strings.ReplaceAll(v.Description, "|", `\|`))
	}
	want := b.String()
	if got := s[i+len(begin) : j]; got != want {
		if os.Getenv("UPDATE_README") != "" {
			//nolint:gosec // G703: path is the constant README path of this repository, not input
			if err := os.WriteFile(path, []byte(s[:i+len(begin)]+want+s[j:]), 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
		t.Errorf("README.md configuration table is out of date; run UPDATE_README=1 go test ./cmd/kubeskel -run README\nwant:\n%s", want)
	}
}
