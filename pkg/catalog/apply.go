package catalog

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/manifest"
)

// Actions reported per object, as kubectl does.
const (
	Created    = "created"
	Configured = "configured"
	Unchanged  = "unchanged"
	Deleted    = "deleted"
)

// Change is what Apply did, or with dryRun would do, to one object.
type Change struct {
	Kind       string `json:"kind"`
	Name       string `json:"name"`
	Action     string `json:"action"`
	Generation int64  `json:"generation"`
}

// Writer applies manifests to the campaigns topic and waits until its own
// catalog reflects them, so that a caller reads its writes.
type Writer struct {
	Client *kgo.Client
	Topic  string
	Cat    *Catalog

	// mu serialises applies through this writer, so that two concurrent
	// applies in one process do not both take the same next generation.
	mu sync.Mutex
}

// Apply validates objs against the catalog and, unless dryRun, writes the
// ones that changed. Each changed object gets the next generation; a campaign
// keeps the targetId it was first given.
//
// The catalog is first brought up to the topic's end, so that what is
// compared and the generations given follow every apply already written,
// by any process. Two processes applying the same object at the same moment
// can still both write the same next generation: the catalog then gives
// the later record the generation after (see Catalog.apply), and Apply
// writes that record again with it, so that the topic's latest version
// carries its own generation, after compaction too. The changes returned
// report the generations the catalog gave.
func (w *Writer) Apply(ctx context.Context, objs []manifest.Object, dryRun bool) ([]Change, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.catchUp(ctx); err != nil {
		return nil, err
	}
	if probs := manifest.Validate(objs, w.Cat.Exists); len(probs) > 0 {
		return nil, probs
	}
	var changes []Change
	var recs []*kgo.Record
	byKey := map[string]writtenObj{}
	var targetIDs map[int64]string // in use, by campaign name: made at the first new campaign

	for _, o := range objs {
		manifest.ApplyDefaults(o)
		key := manifest.Key(o)
		md := o.GetMetadata()
		ch := Change{Kind: o.GetKind(), Name: md.Name, Action: Created, Generation: 1}
		cur, exists := w.Cat.Get(o.GetKind(), md.Name)
		if exists {
			ch.Generation = cur.GetMetadata().Generation
			same, err := sameSpec(cur, o)
			if err != nil {
				return nil, err
			}
			if same {
				ch.Action = Unchanged
				changes = append(changes, ch)
				continue
			}
			ch.Action, ch.Generation = Configured, ch.Generation+1
		}
		md.Generation = ch.Generation
		if c, ok := o.(*manifest.Campaign); ok {
			var id int64
			if exists {
				if prev := cur.(*manifest.Campaign).Status; prev != nil {
					id = prev.TargetID
				}
			}
			if id == 0 {
				if targetIDs == nil {
					targetIDs = w.targetIDsInUse()
				}
				id = freeTargetID(md.Name, targetIDs)
				targetIDs[id] = md.Name
			}
			c.Status = &manifest.CampaignState{TargetID: id}
		}
		value, err := json.Marshal(o)
		if err != nil {
			return nil, fmt.Errorf("encode %s: %w", key, err)
		}
		recs = append(recs, &kgo.Record{Topic: w.Topic, Key: []byte(key), Value: value})
		byKey[key] = writtenObj{obj: o, change: len(changes)}
		changes = append(changes, ch)
	}
	if dryRun || len(recs) == 0 {
		return changes, nil
	}
	for round := 0; ; round++ {
		if err := w.write(ctx, recs); err != nil {
			return changes, err
		}
		var err error
		if recs, err = w.renumbered(recs, byKey, changes); err != nil || len(recs) == 0 {
			return changes, err
		}
		if round == maxRewrites {
			return changes, fmt.Errorf("%d objects still share a generation with a concurrent apply after %d rewrites", len(recs), round)
		}
	}
}

// maxRewrites bounds how often Apply writes a record again because a
// concurrent apply took its generation.
const maxRewrites = 5

// writtenObj is an object Apply wrote, and the index of its change.
type writtenObj struct {
	obj    manifest.Object
	change int
}

// renumbered looks up, in the catalog that has read them back, the
// generations given to recs (just written). It updates the changes, and
// returns the records to write again: those that are still their object's
// latest version and were given a generation other than the one they carry
// (a concurrent apply had written it).
func (w *Writer) renumbered(recs []*kgo.Record, objs map[string]writtenObj, changes []Change) ([]*kgo.Record, error) {
	var again []*kgo.Record
	for _, r := range recs {
		wr := objs[string(r.Key)]
		md := wr.obj.GetMetadata()
		gen, ok := w.Cat.generationAt(r.Offset)
		if !ok || gen == md.Generation {
			continue
		}
		changes[wr.change].Generation = gen
		if last, ok := w.Cat.lastWrite(string(r.Key)); !ok || last != r.Offset {
			continue // a later apply has replaced it: that one is the latest
		}
		md.Generation = gen
		value, err := json.Marshal(wr.obj)
		if err != nil {
			return nil, fmt.Errorf("encode %s: %w", r.Key, err)
		}
		again = append(again, &kgo.Record{Topic: w.Topic, Key: r.Key, Value: value})
	}
	return again, nil
}

// catchUp waits until the catalog has read the campaigns topic up to its
// end. A writer without a client (dry runs) uses the catalog as it is.
func (w *Writer) catchUp(ctx context.Context) error {
	if w.Client == nil {
		return nil
	}
	ends, err := kadm.NewClient(w.Client).ListEndOffsets(ctx, w.Topic)
	if err != nil {
		return fmt.Errorf("campaigns topic end offset: %w", err)
	}
	end, ok := ends.Lookup(w.Topic, 0)
	if !ok || end.Err != nil {
		return fmt.Errorf("campaigns topic %s: partition 0: %v", w.Topic, end.Err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := w.Cat.WaitVersion(wctx, end.Offset); err != nil {
		return fmt.Errorf("this process has not read the campaigns topic up to its end (%d): %w", end.Offset, err)
	}
	return nil
}

// Delete writes a tombstone for kind/name. It reports false when the object
// does not exist.
func (w *Writer) Delete(ctx context.Context, kind, name string) (bool, error) {
	if _, ok := w.Cat.Get(kind, name); !ok {
		return false, nil
	}
	return true, w.write(ctx, []*kgo.Record{{Topic: w.Topic, Key: []byte(kind + "/" + name)}})
}

func (w *Writer) write(ctx context.Context, recs []*kgo.Record) error {
	res := w.Client.ProduceSync(ctx, recs...)
	if err := res.FirstErr(); err != nil {
		return fmt.Errorf("write %s: %w", w.Topic, err)
	}
	last := int64(0)
	for _, r := range res {
		last = max(last, r.Record.Offset)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := w.Cat.WaitVersion(wctx, last+1); err != nil {
		return fmt.Errorf("written, but this process has not read it back yet: %w", err)
	}
	return nil
}

// sameVersion reports whether two objects are the same version: the same
// spec (sameSpec); objects that cannot be compared are not.
func sameVersion(a, b manifest.Object) bool {
	same, err := sameSpec(a, b)
	return err == nil && same
}

// sameSpec compares two objects ignoring what the server sets.
func sameSpec(a, b manifest.Object) (bool, error) {
	strip := func(o manifest.Object) ([]byte, error) {
		raw, err := json.Marshal(o)
		if err != nil {
			return nil, err
		}
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, err
		}
		delete(m, "status")
		if md, ok := m["metadata"].(map[string]any); ok {
			delete(md, "generation")
		}
		return json.Marshal(m)
	}
	x, err := strip(a)
	if err != nil {
		return false, err
	}
	y, err := strip(b)
	if err != nil {
		return false, err
	}
	return bytes.Equal(x, y), nil
}

// targetIDsInUse maps the catalog's campaigns' targetIds to their names.
func (w *Writer) targetIDsInUse() map[int64]string {
	inUse := map[int64]string{}
	for _, c := range w.Cat.Campaigns() {
		if c.Status != nil {
			inUse[c.Status.TargetID] = c.Metadata.Name
		}
	}
	return inUse
}

// freeTargetID is the targetId of a new campaign: TargetID(name), unless
// another campaign has it in inUse (the hash of two names can collide),
// then that of "name#1", "name#2", ... The id is written with the
// campaign, so every process agrees on it whatever the order of creation.
func freeTargetID(name string, inUse map[int64]string) int64 {
	for i := 0; ; i++ {
		candidate := name
		if i > 0 {
			candidate = fmt.Sprintf("%s#%d", name, i)
		}
		id := TargetID(candidate)
		if other, ok := inUse[id]; !ok || other == name {
			return id
		}
	}
}

// TargetID is the positive targetId a campaign is first given, derived from
// its name so that a re-created campaign gets the same one (unless another
// campaign has taken it since: see freeTargetID).
func TargetID(name string) int64 {
	h := fnv.New32a()
	h.Write([]byte(name))
	return int64(h.Sum32()%2147483646) + 1
}

// NewWriter returns a writer that produces through cl.
func NewWriter(cl *kgo.Client, cfg kafka.Config, cat *Catalog) *Writer {
	return &Writer{Client: cl, Topic: cfg.Topics().Campaigns, Cat: cat}
}
