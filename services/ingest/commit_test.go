package ingest

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/hookstream/hookstream/pkg/kafka/kafkatest"
)

// The consumer commits a raw offset only after the broker acknowledged the
// normalised record or the dead letter of everything below it. These tests
// check that invariant where it can break (a stop mid-stream, a broker that
// refuses writes) as: every raw record below the committed offsets has all
// its outputs on the broker, and after a restart nothing is missing
// (duplicates are allowed: delivery is at-least-once).

// newCommitEnv is a broker with the mix on the raw topic, consumed in small
// polls so that a run has many batches and commits.
func newCommitEnv(t *testing.T, records int) (*env, *mixCheck) {
	t.Helper()
	kc := kafkatest.New(t)
	kcfg := kc.Config()
	kcfg.FetchMaxRecords = 50
	e := newEnvWith(t, kc, kcfg)
	mix := genMix(records)
	e.produceMix(mix)
	return e, identifyRaw(t, mix, e.reader(e.topics.EventsRaw).readNew())
}

// checkCommittedCovered checks that every raw record below the committed
// offsets has all its outputs on the broker, and returns how many raw
// records are committed.
func (e *env) checkCommittedCovered(m *mixCheck) int {
	e.t.Helper()
	committed := e.committed(e.topics.EventsRaw)
	seen, _, _ := m.outputs(e.reader(e.topics.Events).readNew(), e.reader(e.topics.EventsDLQ).readNew(), "")
	n := 0
	m.complete(seen, true, func(i int) bool {
		p := m.posOf[i]
		if p.offset < committed[p.partition] {
			n++
			return true
		}
		return false
	})
	return n
}

// checkAllThere waits for ingest to catch up and checks that every outcome
// is on the broker, in its place, at least once.
func (e *env) checkAllThere(m *mixCheck) {
	e.t.Helper()
	e.waitCaughtUp(60 * time.Second)
	events, dlq := e.reader(e.topics.Events).readNew(), e.reader(e.topics.EventsDLQ).readNew()
	seen, _, _ := m.outputs(events, dlq, "")
	dups := m.complete(seen, true, func(int) bool { return true })
	m.done()
	e.t.Logf("%d raw records → %d events + %d dead letters, %d of them duplicates", len(m.mix), len(events), len(dlq), dups)
}

func waitHits(t *testing.T, h *kfake.FaultHandle, n int, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.Wait(ctx, n); err != nil {
		t.Fatalf("waiting for %d %s: saw %d: %v", n, what, h.Hits(), err)
	}
}

func TestStopMidStreamAndRestart(t *testing.T) {
	e, m := newCommitEnv(t, 5000)
	commits := e.kc.Kfake().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.OffsetCommit}, Group: group, Observe: true, Count: -1})

	_, stop := e.start(defaultConfig())
	waitHits(t, commits, 3, "offset commits")
	stop()

	n := e.checkCommittedCovered(m)
	if n == 0 || n == len(m.mix) {
		t.Fatalf("%d of %d raw records committed when the first run stopped: want a stop mid-stream", n, len(m.mix))
	}
	t.Logf("stopped with %d of %d raw records committed", n, len(m.mix))

	e.start(defaultConfig())
	e.checkAllThere(m)
}

func TestBrokerRefusingWrites(t *testing.T) {
	// A non-retriable error (as after an ACL change) fails the produce at
	// once, whatever the client's retry settings.
	refuse := func(topic string) kfake.Fault {
		return kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: kerr.TopicAuthorizationFailed, Count: -1}
	}
	t.Run("every write refused, then allowed", func(t *testing.T) {
		e, m := newCommitEnv(t, 2000)
		h := e.kc.Kfake().Fault(refuse(e.topics.Events), refuse(e.topics.EventsDLQ))
		e.start(defaultConfig())
		waitHits(t, h, 4, "refused produce requests")
		if got := e.committed(e.topics.EventsRaw); len(got) != 0 {
			t.Errorf("committed %v while the broker refused every write", got)
		}
		h.Remove()
		e.checkAllThere(m)
	})
	t.Run("dead letters refused, stopped meanwhile, restarted", func(t *testing.T) {
		e, m := newCommitEnv(t, 2000)
		commits := e.kc.Kfake().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.OffsetCommit}, Group: group, Observe: true, Count: -1})
		_, stop := e.start(defaultConfig())
		waitHits(t, commits, 2, "offset commits")
		h := e.kc.Kfake().Fault(refuse(e.topics.EventsDLQ))
		waitHits(t, h, 3, "refused produce requests")
		stop()
		n := e.checkCommittedCovered(m)
		if n == len(m.mix) {
			t.Fatalf("every raw record was committed before the broker refused dead letters")
		}
		t.Logf("stopped with %d of %d raw records committed", n, len(m.mix))
		h.Remove()
		e.start(defaultConfig())
		e.checkAllThere(m)
	})
}

// TestDeadLetterTooLargeForABatch: a raw record close to the broker's size
// limit is invalid (too large), and its dead letter with our headers would
// not fit in a produce batch. The partition must not stop on it: the dead
// letter carries the beginning of the value and the original length, and
// the records behind it go through.
func TestDeadLetterTooLargeForABatch(t *testing.T) {
	e := newEnv(t)
	huge := `{"type":"event","identity":"huge","name":"N","properties":{"p":"` + strings.Repeat("x", e.kcfg.ProduceBatchBytes-300) + `"}}`
	big := `{"type":"event","identity":"big","name":"N","properties":{"p":"` + strings.Repeat("x", 200<<10) + `"}}`
	next := `{"type":"event","identity":"after","name":"N"}`
	key := []byte("one-partition")
	e.produce(e.topics.EventsRaw, &kgo.Record{Key: key, Value: []byte(huge)}, &kgo.Record{Key: key, Value: []byte(big)}, &kgo.Record{Key: key, Value: []byte(next)})

	e.start(defaultConfig())
	e.waitCaughtUp(30 * time.Second)

	dlq := e.reader(e.topics.EventsDLQ).readNew()
	if len(dlq) != 2 {
		t.Fatalf("%d dead letters, want 2", len(dlq))
	}
	// The DLQ has one partition, and the raw records share one: in order.
	for k, tt := range []struct {
		raw       string
		truncated bool
	}{{huge, true}, {big, false}} {
		r := dlq[k]
		code, _ := header(r, HeaderErrorCode)
		trunc, cut := header(r, HeaderTruncated)
		switch {
		case code != "too_large":
			t.Errorf("%s: code %q, want too_large", pos(r), code)
		case cut != tt.truncated:
			t.Errorf("%s: %s header present %v, want %v", pos(r), HeaderTruncated, cut, tt.truncated)
		case !tt.truncated && string(r.Value) != tt.raw:
			t.Errorf("%s: value is not the original bytes", pos(r))
		case tt.truncated && (trunc != strconv.Itoa(len(tt.raw)) || !strings.HasPrefix(tt.raw, string(r.Value)) || len(r.Value) < len(tt.raw)-1024):
			t.Errorf("%s: %s %q, value of %d bytes: want the original length %d and nearly all of its beginning", pos(r), HeaderTruncated, trunc, len(r.Value), len(tt.raw))
		}
	}
	events := e.reader(e.topics.Events).readNew()
	checkEvents(t, events, []wantEvent{{"after", "N", kindEvent, "native"}})
}
