package webhook

import (
	"testing"

	"github.com/hookstream/hookstream/pkg/manifest"
)

// A manifest is validated by pkg/manifest, which cannot import this
// package: every filter added here must also be accepted there, or a body
// using a documented filter (jsonify, sha256, ...) is refused at apply.
func TestManifestAcceptsEveryAddedFilter(t *testing.T) {
	for _, f := range Filters {
		if err := manifest.CheckLiquid("{{ x | " + f + " }}"); err != nil {
			t.Errorf("filter %s: manifest validation says %v", f, err)
		}
	}
}
