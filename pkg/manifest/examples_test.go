package manifest

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// Every example in the repository parses and validates, together (as
// `hookstream dev -f examples/` applies them) and each file on its own (as
// `hookstream apply -f examples/FILE` does), and together they cover every
// trigger type and both delivery types.
func TestExamples(t *testing.T) {
	const dir = "../../examples"
	objs, err := ParsePath(dir)
	if err != nil {
		t.Fatalf("examples: %v", err)
	}
	if probs := Validate(objs, nil); len(probs) > 0 {
		t.Fatalf("examples are invalid:\n%v", probs)
	}
	triggers, deliveries := map[string]bool{}, map[string]bool{}
	for _, o := range objs {
		if c, ok := o.(*Campaign); ok {
			deliveries[c.Spec.Delivery.Type] = true
			if c.Spec.Trigger != nil {
				triggers[c.Spec.Trigger.Type] = true
			}
		}
		if w, ok := o.(*Webhook); ok && w.Spec.Auth != nil {
			t.Errorf("%s: examples must run in `hookstream dev` without secrets", Key(o))
		}
	}
	for _, tt := range TriggerTypes {
		if !triggers[tt] {
			t.Errorf("no example uses trigger type %s", tt)
		}
	}
	if !deliveries[DeliveryScheduled] || !deliveries[DeliveryTriggered] {
		t.Errorf("examples cover deliveries %v, want triggered and scheduled", deliveries)
	}
	files, err := ManifestFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		objs, err := ParsePath(f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if probs := Validate(objs, nil); len(probs) > 0 {
			t.Errorf("%s does not stand alone:\n%v", f, probs)
		}
	}
}

// The contract's examples, when the shared spec is checked out beside the
// repository, are valid manifests too.
func TestContractExamples(t *testing.T) {
	const dir = "/work/shared/spec/examples"
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		t.Skipf("%s does not exist", dir)
	}
	matches, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if len(matches) == 0 {
		t.Skipf("no manifests in %s", dir)
	}
	for _, f := range matches {
		objs, err := ParsePath(f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if probs := Validate(objs, nil); len(probs) > 0 {
			t.Errorf("%s:\n%v", f, probs)
		}
	}
}
