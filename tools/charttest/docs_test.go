package charttest

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

func readValues(t *testing.T) []Value {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(ChartDir(), "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	values, undocumented, err := ParseValues(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(undocumented) > 0 {
		t.Errorf("values without a `# --` comment (themselves or, for an object, each of their children): %s", strings.Join(undocumented, ", "))
	}
	return values
}

// TestValuesDocumented: every value has its `# --` description.
func TestValuesDocumented(t *testing.T) {
	if len(readValues(t)) < 50 {
		t.Fatal("suspiciously few documented values")
	}
}

// TestSchemaCoversValues: values.schema.json describes every value, and nothing else.
func TestSchemaCoversValues(t *testing.T) {
	schema, err := os.ReadFile(filepath.Join(ChartDir(), "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	paths, err := SchemaPaths(schema)
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, v := range readValues(t) {
		documented[v.Key] = true
		if !paths[v.Key] {
			t.Errorf("values.schema.json has no property %s", v.Key)
		}
	}
	var extra []string
	for p := range paths {
		if documented[p] || p == "global" {
			continue
		}
		// A parent of documented values (e.g. "kafka" of "kafka.brokers").
		parent := false
		for d := range documented {
			parent = parent || strings.HasPrefix(d, p+".")
		}
		// A child of a value documented as a whole (e.g. nothing under podSecurityContext).
		child := false
		for d := range documented {
			child = child || strings.HasPrefix(p, d+".")
		}
		if !parent && !child {
			extra = append(extra, p)
		}
	}
	sort.Strings(extra)
	if len(extra) > 0 {
		t.Errorf("values.schema.json describes values that values.yaml does not have: %s", strings.Join(extra, ", "))
	}
}

// TestReadmeValues: the chart README's table is the one values.yaml generates; -update
// rewrites it.
func TestReadmeValues(t *testing.T) {
	path := filepath.Join(ChartDir(), "README.md")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	readme := string(data)
	start, end := strings.Index(readme, TableStart), strings.Index(readme, TableEnd)
	if start < 0 || end < start {
		t.Fatalf("%s lacks the markers %q and %q", path, TableStart, TableEnd)
	}
	want := readme[:start] + TableStart + "\n" + Table(readValues(t)) + readme[end:]
	if readme == want {
		return
	}
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatalf("%s's values table is stale: run go test ./tools/charttest -run TestReadmeValues -update\n%s", path, firstDiff(readme, want))
}

// TestDeployDocListsObjects: docs/deploy.md names every object of the distributed mode's
// default render (ci/default-values.yaml), with its kind.
func TestDeployDocListsObjects(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(Root(), "docs", "deploy.md"))
	if err != nil {
		t.Fatal(err)
	}
	objs := decode(t, ciValues(t)["default"])
	lines := strings.Split(string(data), "\n")
	for _, o := range objs {
		found := false
		for _, l := range lines {
			found = found || (strings.Contains(l, "`"+o.Name+"`") && strings.Contains(l, o.Kind))
		}
		if !found {
			t.Errorf("docs/deploy.md does not list %s `%s` (rendered from %s)", o.Kind, o.Name, o.Source)
		}
	}
}
