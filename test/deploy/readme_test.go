package deploy

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

var updateReadme = flag.Bool("update-readme", false, "rewrite the values table of charts/kubeskel/README.md")

const (
	tableStart = "<!-- values-table:start (generated from values.yaml by test/deploy: go test -run TestReadmeValuesTable -update-readme) -->"
	tableEnd   = "<!-- values-table:end -->"
)

// valueRow is one row of the README's values table.
type valueRow struct {
	Key, Type, Default, Description string
}

// valuesTable reads values.yaml and returns one row per key documented with
// a "# --" comment (the whole subtree is its default), plus the paths of
// leaves that no documented key covers.
func valuesTable(src []byte) (rows []valueRow, undocumented []string, err error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, nil, err
	}
	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, nil, fmt.Errorf("values.yaml is not a mapping")
	}
	var walk func(prefix string, m *yaml.Node) error
	walk = func(prefix string, m *yaml.Node) error {
		for i := 0; i+1 < len(m.Content); i += 2 {
			k, v := m.Content[i], m.Content[i+1]
			path := k.Value
			if prefix != "" {
				path = prefix + "." + k.Value
			}
			if desc, ok := docComment(k.HeadComment); ok {
				var val any
				if err := v.Decode(&val); err != nil {
					return fmt.Errorf("%s: %w", path, err)
				}
				def, err := json.Marshal(val)
				if err != nil {
					return fmt.Errorf("%s: %w", path, err)
				}
				rows = append(rows, valueRow{Key: path, Type: yamlType(v, val), Default: string(def), Description: desc})
				continue
			}
			if v.Kind == yaml.MappingNode && len(v.Content) > 0 {
				if err := walk(path, v); err != nil {
					return err
				}
				continue
			}
			undocumented = append(undocumented, path)
		}
		return nil
	}
	err = walk("", doc.Content[0])
	return rows, undocumented, err
}

// docComment returns the text after the last "# --" of a head comment,
// joined into one line.
func docComment(head string) (string, bool) {
	lines := strings.Split(head, "\n")
	start := -1
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), "# --") {
			start = i
		}
	}
	if start < 0 {
		return "", false
	}
	var words []string
	for i, l := range lines[start:] {
		l = strings.TrimPrefix(strings.TrimSpace(l), "#")
		if i == 0 {
			l = strings.TrimPrefix(strings.TrimSpace(l), "--")
		}
		if l = strings.TrimSpace(l); l != "" {
			words = append(words, l)
		}
	}
	return strings.Join(words, " "), true
}

func yamlType(n *yaml.Node, val any) string {
	switch val.(type) {
	case nil:
		return "null"
	case bool:
		return "bool"
	case int, int64, uint64:
		return "int"
	case float64:
		return "float"
	case string:
		return "string"
	case []any:
		return "list"
	case map[string]any:
		return "object"
	}
	return n.Tag
}

func renderTable(rows []valueRow) string {
	var b strings.Builder
	b.WriteString("| Key | Type | Default | Description |\n|-----|------|---------|-------------|\n")
	esc := func(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
	for _, r := range rows {
		fmt.Fprintf(&b, "| `%s` | %s | `%s` | %s |\n", r.Key, r.Type, esc(r.Default), esc(r.Description))
	}
	return b.String()
}

// TestReadmeValuesTable keeps the README's values table in step with
// values.yaml, and every value documented.
func TestReadmeValuesTable(t *testing.T) {
	rows, undocumented, err := valuesTable(readFile(t, "charts/kubeskel/values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(undocumented) != 0 {
		t.Errorf("values without a \"# --\" comment on them or a parent: %v", undocumented)
	}
	readmePath := filepath.Join(chartDir, "README.md")
	readme := readFile(t, "charts/kubeskel/README.md")
	before, rest, ok := bytes.Cut(readme, []byte(tableStart))
	if !ok {
		t.Fatalf("%s has no %q marker", readmePath, tableStart)
	}
	current, after, ok := bytes.Cut(rest, []byte(tableEnd))
	if !ok {
		t.Fatalf("%s has no %q marker", readmePath, tableEnd)
	}
	want := "\n" + renderTable(rows)
	if string(current) == want {
		return
	}
	if *updateReadme {
		out := bytes.Join([][]byte{before, []byte(tableStart), []byte(want), []byte(tableEnd), after}, nil)
		if err := os.WriteFile(readmePath, out, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("rewrote the values table of %s", readmePath)
		return
	}
	t.Errorf("the values table of %s is out of date; run: cd test/deploy && go test -run TestReadmeValuesTable -update-readme", readmePath)
}

// TestValuesTableControl proves the documentation check can fail.
func TestValuesTableControl(t *testing.T) {
	rows, undocumented, err := valuesTable([]byte("# -- documented\na: 1\nb:\n  c: true\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(undocumented), "[b.c]"; got != want {
		t.Errorf("undocumented = %s, want %s", got, want)
	}
	if got, want := len(rows), 1; got != want {
		t.Errorf("rows = %d, want %d", got, want)
	}
}
