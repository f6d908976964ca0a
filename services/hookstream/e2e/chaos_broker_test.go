package e2e

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// chaosBroker is a three-broker kfake cluster in the test process: group
// coordinators and partition leaders are spread over the brokers, so that
// moving them (and failing one broker's requests) means something. Faults
// are installed with kfake's Fault API and ControlKey functions and removed
// by the heal function each returns.
type chaosBroker struct {
	c *kfake.Cluster

	mu      sync.Mutex
	handles []*kfake.FaultHandle // installed and not yet removed
}

func newChaosBroker(t *testing.T) *chaosBroker {
	t.Helper()
	c, err := kfake.NewCluster(
		kfake.NumBrokers(3),
		kfake.DefaultNumPartitions(3),
		// kfake compacts compacted topics only with a cleaner backoff: the
		// timers and changelog topics rely on compaction.
		kfake.BrokerConfigs(map[string]string{"log.cleaner.backoff.ms": "1000"}),
	)
	if err != nil {
		t.Fatalf("start kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return &chaosBroker{c: c}
}

// addrs is the seed broker list (every broker).
func (b *chaosBroker) addrs() []string { return b.c.ListenAddrs() }

func (b *chaosBroker) fault(f kfake.Fault) func() {
	h := b.c.Fault(f)
	b.mu.Lock()
	b.handles = append(b.handles, h)
	b.mu.Unlock()
	return func() { h.Remove() }
}

// healAll removes every fault still installed (controls expire by
// themselves: each checks its deadline).
func (b *chaosBroker) healAll() {
	b.mu.Lock()
	hs := b.handles
	b.handles = nil
	b.mu.Unlock()
	for _, h := range hs {
		h.Remove()
	}
}

// A chaosBrokerFault starts a fault lasting d and returns a description of
// what it did and the function that ends it.
type chaosBrokerFault func(b *chaosBroker, rng *rand.Rand, d time.Duration) (detail string, heal func())

// chaosBrokerFaults are the broker faults, by name.
var chaosBrokerFaults = map[string]chaosBrokerFault{
	// The broker appends the batch but answers REQUEST_TIMED_OUT: the
	// producer retries what is already written (a lost acknowledgement).
	"broker-produce-ack-lost": func(b *chaosBroker, rng *rand.Rand, d time.Duration) (string, func()) {
		node := int32(rng.IntN(3))
		return fmt.Sprintf("node %d appends every produce but answers REQUEST_TIMED_OUT", node), b.fault(kfake.Fault{
			Keys: []kmsg.Key{kmsg.Produce}, Nodes: []int32{node}, Err: kerr.RequestTimedOut, Count: -1,
		})
	},
	// One broker closes the connection of every produce request it
	// receives, without appending: the response never comes.
	"broker-produce-dropped": func(b *chaosBroker, rng *rand.Rand, d time.Duration) (string, func()) {
		node := int32(rng.IntN(3))
		until := time.Now().Add(d)
		b.c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
			b.c.KeepControl()
			if time.Now().After(until) {
				b.c.DropControl()
				return nil, nil, false
			}
			if b.c.CurrentNode() != node {
				return nil, nil, false
			}
			return nil, errors.New("chaos: produce dropped"), true
		})
		return fmt.Sprintf("node %d drops produce requests (connection closed, nothing appended)", node), func() {}
	},
	// Fetches of one broker fail with NOT_LEADER_OR_FOLLOWER (consumers
	// refresh metadata and retry) or an unknown server error.
	"broker-fetch-errors": func(b *chaosBroker, rng *rand.Rand, d time.Duration) (string, func()) {
		node := int32(rng.IntN(3))
		err := kerr.NotLeaderForPartition
		if rng.IntN(2) == 0 {
			err = kerr.UnknownServerError
		}
		return fmt.Sprintf("node %d answers fetches with %s", node, err.Message), b.fault(kfake.Fault{
			Keys: []kmsg.Key{kmsg.Fetch}, Nodes: []int32{node}, Err: err, Count: -1,
		})
	},
	// Offset commits are applied but answered REQUEST_TIMED_OUT, or
	// refused with COORDINATOR_NOT_AVAILABLE: consumers must not skip
	// or lose records either way.
	"broker-commit-errors": func(b *chaosBroker, rng *rand.Rand, d time.Duration) (string, func()) {
		err := kerr.RequestTimedOut
		if rng.IntN(2) == 0 {
			err = kerr.CoordinatorNotAvailable
		}
		return "offset commits answered " + err.Message, b.fault(kfake.Fault{
			Keys: []kmsg.Key{kmsg.OffsetCommit}, Err: err, Count: -1,
		})
	},
	// Every group coordinator is rehashed to (likely) another broker, and
	// heartbeats are answered NOT_COORDINATOR for a while.
	"broker-coordinator-move": func(b *chaosBroker, rng *rand.Rand, d time.Duration) (string, func()) {
		groups := []string{"hookstream-ingest", "hookstream-evaluator", "hookstream-timer", "hookstream-dispatcher"}
		before := make([]int32, len(groups))
		for i, g := range groups {
			before[i] = b.c.CoordinatorFor(g)
		}
		b.c.RehashCoordinators()
		var moves []string
		for i, g := range groups {
			moves = append(moves, fmt.Sprintf("%s %d→%d", strings.TrimPrefix(g, "hookstream-"), before[i], b.c.CoordinatorFor(g)))
		}
		heal := b.fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Heartbeat}, Err: kerr.NotCoordinator, Count: 10})
		return "coordinators rehashed (" + strings.Join(moves, ", ") + ")", heal
	},
	// Every partition gets a random leader (an election): clients get
	// NOT_LEADER and move. This kfake version then answers
	// OffsetForLeaderEpoch with the log start for a partition of more than
	// one segment, so every consumer believes records were lost and
	// replays its partitions from offset 0: in effect, an offset reset to
	// the earliest of every group, which the pipeline must absorb too.
	"broker-leader-shuffle": func(b *chaosBroker, rng *rand.Rand, d time.Duration) (string, func()) {
		b.c.ShufflePartitionLeaders()
		return "partition leaders shuffled (kfake: consumers see false data loss and replay from offset 0)", func() {}
	},
	// One broker stalls: each request it receives waits until the fault
	// ends, then is answered normally (a GC pause, a slow disk).
	"broker-pause": func(b *chaosBroker, rng *rand.Rand, d time.Duration) (string, func()) {
		node := int32(rng.IntN(3))
		until := time.Now().Add(d)
		b.c.Control(func(kmsg.Request) (kmsg.Response, error, bool) {
			b.c.KeepControl()
			if !time.Now().Before(until) {
				b.c.DropControl()
				return nil, nil, false
			}
			if b.c.CurrentNode() == node {
				b.c.SleepControl(func() { time.Sleep(time.Until(until)) })
			}
			return nil, nil, false
		})
		return fmt.Sprintf("node %d stalls every request", node), func() {}
	},
}
