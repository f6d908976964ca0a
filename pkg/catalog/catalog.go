// Package catalog keeps every process's view of the manifests: an in-memory,
// versioned copy of the compacted campaigns topic, rebuilt from the topic at
// start and updated live, and the apply path that writes to the topic.
package catalog

import (
	"context"
	"log/slog"
	"sort"
	"sync"

	"github.com/hookstream/hookstream/pkg/manifest"
)

// Catalog is the current set of manifests. It is safe for concurrent use;
// returned objects are shared and must not be modified.
type Catalog struct {
	mu      sync.RWMutex
	objs    map[string]manifest.Object
	gens    map[string]keyGen // by key, while the object exists
	written map[int64]int64   // offset → generation given, for the last recentWrites records
	version int64             // offset of the next record to apply on the campaigns topic
	changed chan struct{}
	log     *slog.Logger
}

// keyGen is what the catalog knows of an object's generations: the highest
// it has given since the object was (re)created, and the offset of the
// record that set the current version.
type keyGen struct {
	top    int64
	offset int64
}

// recentWrites bounds Catalog.written: a writer looks up the records it has
// just written, within seconds.
const recentWrites = 4096

// New returns an empty catalog.
func New(log *slog.Logger) *Catalog {
	return &Catalog{objs: map[string]manifest.Object{}, gens: map[string]keyGen{}, written: map[int64]int64{}, changed: make(chan struct{}), log: log}
}

// Get returns the object of that kind and name.
func (c *Catalog) Get(kind, name string) (manifest.Object, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	o, ok := c.objs[kind+"/"+name]
	return o, ok
}

// Campaign returns a campaign by name.
func (c *Catalog) Campaign(name string) (*manifest.Campaign, bool) {
	o, ok := c.Get(manifest.KindCampaign, name)
	if !ok {
		return nil, false
	}
	return o.(*manifest.Campaign), true
}

// Webhook returns a webhook by name.
func (c *Catalog) Webhook(name string) (*manifest.Webhook, bool) {
	o, ok := c.Get(manifest.KindWebhook, name)
	if !ok {
		return nil, false
	}
	return o.(*manifest.Webhook), true
}

// Segment returns a segment by name.
func (c *Catalog) Segment(name string) (*manifest.Segment, bool) {
	o, ok := c.Get(manifest.KindSegment, name)
	if !ok {
		return nil, false
	}
	return o.(*manifest.Segment), true
}

// List returns the objects of one kind, sorted by name.
func (c *Catalog) List(kind string) []manifest.Object {
	c.mu.RLock()
	var out []manifest.Object
	for _, o := range c.objs {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	c.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].GetMetadata().Name < out[j].GetMetadata().Name })
	return out
}

// Campaigns returns every campaign, sorted by name.
func (c *Catalog) Campaigns() []*manifest.Campaign {
	objs := c.List(manifest.KindCampaign)
	out := make([]*manifest.Campaign, len(objs))
	for i, o := range objs {
		out[i] = o.(*manifest.Campaign)
	}
	return out
}

// Exists reports whether an object exists; it is a manifest.Resolver.
func (c *Catalog) Exists(kind, name string) bool {
	_, ok := c.Get(kind, name)
	return ok
}

// Version is the offset of the next campaigns-topic record the catalog will
// apply: every record below it is reflected.
func (c *Catalog) Version() int64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.version
}

// WaitVersion waits until Version() >= v.
func (c *Catalog) WaitVersion(ctx context.Context, v int64) error {
	for {
		c.mu.RLock()
		ver, ch := c.version, c.changed
		c.mu.RUnlock()
		if ver >= v {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// apply applies one record of the campaigns topic: a value puts the object,
// a nil value (tombstone) deletes it. Records that do not decode, or whose
// key is not their object's kind/name, are logged and skipped, never fatal:
// the topic is shared with other writers.
//
// Generations: a record normally carries the next generation of its object.
// Two writers that applied at the same time (two ingest replicas) can both
// have written the same one; the catalog then gives the later record, when
// its spec differs, the next generation after the highest it has given, so
// that every version of an object has a generation of its own, and every
// process, reading the same records in the same order, agrees. (The writer
// of such a record writes it again with that generation, so that the
// topic's latest record carries it after compaction too: see Writer.Apply.)
func (c *Catalog) apply(key, value []byte, offset int64) {
	var obj manifest.Object
	if value != nil {
		var err error
		obj, err = manifest.Decode(value)
		switch {
		case err != nil:
			c.log.Error("skipping undecodable campaigns record", "key", string(key), "offset", offset, "err", err)
		case manifest.Key(obj) != string(key):
			c.log.Error("skipping campaigns record whose key is not its object's kind/name", "key", string(key), "object", manifest.Key(obj), "offset", offset)
			obj = nil
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case value == nil:
		delete(c.objs, string(key))
		delete(c.gens, string(key))
	case obj != nil:
		k := string(key)
		md := obj.GetMetadata()
		g, seen := c.gens[k]
		if seen && md.Generation <= g.top {
			if prev := c.objs[k]; prev != nil && sameVersion(prev, obj) {
				md.Generation = prev.GetMetadata().Generation
			} else {
				md.Generation = g.top + 1
			}
		}
		c.gens[k] = keyGen{top: max(g.top, md.Generation), offset: offset}
		c.objs[k] = obj
		if len(c.written) >= recentWrites {
			clear(c.written)
		}
		c.written[offset] = md.Generation
	}
	if offset+1 > c.version {
		c.version = offset + 1
	}
	close(c.changed)
	c.changed = make(chan struct{})
}

// lastWrite reports the offset of the record that set the current version
// of the object at key.
func (c *Catalog) lastWrite(key string) (int64, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	g, ok := c.gens[key]
	return g.offset, ok
}

// generationAt reports the generation the catalog gave the record at
// offset, if it applied it recently.
func (c *Catalog) generationAt(offset int64) (int64, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	g, ok := c.written[offset]
	return g, ok
}

// markCaughtUp sets the version when the topic holds nothing more to read.
func (c *Catalog) markCaughtUp(end int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if end > c.version {
		c.version = end
		close(c.changed)
		c.changed = make(chan struct{})
	}
}
