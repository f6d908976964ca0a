package evaluator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// Keys in the evaluator's Pebble store.
const profilePrefix = "p/"

// store is the evaluator's local state.
type store struct {
	db *pebble.DB
}

func openStore(dir string) (*store, error) {
	db, err := pebble.Open(dir, &pebble.Options{})
	if err != nil {
		return nil, fmt.Errorf("open evaluator state %s: %w", dir, err)
	}
	return &store{db: db}, nil
}

func (s *store) close() error { return s.db.Close() }

// profile reads a user's profile through batch b (which sees its own
// writes). Missing is an empty profile.
func profile(b *pebble.Batch, identity string) (map[string]any, error) {
	v, closer, err := b.Get([]byte(profilePrefix + identity))
	if errors.Is(err, pebble.ErrNotFound) {
		return map[string]any{}, nil
	}
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	m := map[string]any{}
	dec := json.NewDecoder(bytes.NewReader(v))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("decode profile of %q: %w", identity, err)
	}
	return m, nil
}

func putProfile(b *pebble.Batch, identity string, p map[string]any) error {
	v, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return b.Set([]byte(profilePrefix+identity), v, nil)
}
