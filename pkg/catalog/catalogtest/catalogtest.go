// Package catalogtest gives service tests a catalog that holds given
// manifests, applied through the real campaigns topic of a test broker.
package catalogtest

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/hookstream/hookstream/pkg/catalog"
	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/manifest"
)

// Catalog is a followed catalog and a writer to change it.
type Catalog struct {
	*catalog.Catalog
	Writer *catalog.Writer
}

// New creates the topics of cfg, starts a catalog follower (stopped when the
// test ends) and applies yamlDocs (manifest YAML) through the topic.
func New(t testing.TB, cfg kafka.Config, yamlDocs string) *Catalog {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kafka.NewClient(cfg, log, "catalogtest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	if err := kafka.EnsureTopics(ctx, cl, -1, cfg.TopicSpecs()); err != nil {
		t.Fatal(err)
	}
	cat := catalog.New(log)
	f := catalog.NewFollower(cfg, log, cat)
	if err := f.StartAsync(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.StopAsync(); _ = f.AwaitTerminated(context.Background()) })
	if err := f.AwaitRunning(ctx); err != nil {
		t.Fatal(err)
	}
	c := &Catalog{Catalog: cat, Writer: catalog.NewWriter(cl, cfg, cat)}
	if yamlDocs != "" {
		c.Apply(t, yamlDocs)
	}
	return c
}

// Apply applies manifest YAML and waits until the catalog reflects it.
func (c *Catalog) Apply(t testing.TB, yamlDocs string) []catalog.Change {
	t.Helper()
	objs, err := manifest.Parse([]byte(yamlDocs), "test")
	if err != nil {
		t.Fatalf("manifests: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	changes, err := c.Writer.Apply(ctx, objs, false)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	return changes
}
