package e2e

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/kafka/kafkatest"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
	"github.com/hookstream/hookstream/services/evaluator"
)

// The first loss TestChaos found, made deterministic: the broker refuses
// the evaluator's triggers (the partition's leader is failing) while it
// accepts the state changelog; the evaluator is killed with SIGKILL before
// the triggers get through. Its restore must not resume after the batch
// whose triggers were never written: the trigger comes once the broker
// takes it again. (When the changelog was produced beside the outputs,
// the restored state had seen the event and the trigger was lost.)
func TestChaosEvaluatorKilledBeforeItsTriggersAreWritten(t *testing.T) {
	for _, wipe := range []bool{false, true} {
		name := "same-disk"
		if wipe {
			name = "new-disk"
		}
		t.Run(name, func(t *testing.T) { chaosEvaluatorKilledBeforeTriggers(t, wipe) })
	}
}

func chaosEvaluatorKilledBeforeTriggers(t *testing.T, wipe bool) {
	c := newEvalCluster(t)
	dir := t.TempDir() + "/ev"
	p := startServe(t, "evaluator", c.broker.Addr(), dir, "chaos-ev")
	// Warm up: the evaluator consumes and emits.
	c.produce([]*hookstreamv1.Event{{Kind: hookstreamv1.Event_KIND_EVENT, Id: "warm-1", Identity: "warm", Name: "Launched", TsMs: time.Now().UnixMilli()}})
	c.settle(1)

	fault := c.broker.Kfake().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "hookstream.triggers", Err: kerr.NotLeaderForPartition, Count: -1})
	c.produce([]*hookstreamv1.Event{{Kind: hookstreamv1.Event_KIND_EVENT, Id: "victim-1", Identity: "victim", Name: "Launched", TsMs: time.Now().UnixMilli()}})
	want := evaluator.TriggerID("launched-never-bought", "victim-1")

	// Give the evaluator the time to evaluate the event and write what the
	// broker accepts (the changelog, before the fix), then kill it.
	if chaosChangelogHas(t, c.broker.Addr(), []byte("victim"), 5*time.Second) {
		t.Log("the changelog has the victim's state while its trigger is not written")
	}
	if fault.Hits() == 0 {
		t.Fatal("the evaluator never tried to write the trigger: nothing was tested")
	}
	p.kill()
	fault.Remove()
	if wipe {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
	}
	startServe(t, "evaluator", c.broker.Addr(), dir, "chaos-ev")
	deadline := time.Now().Add(60 * time.Second)
	for c.triggerIDs()[want] == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("trigger %s of the event the killed evaluator had evaluated never came (triggers seen: %v)", want, c.triggerIDs())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// chaosChangelogHas reports whether a record whose key contains sub
// reaches the evaluator's changelog within timeout.
func chaosChangelogHas(t *testing.T, broker string, sub []byte, timeout time.Duration) bool {
	t.Helper()
	cl, err := kafka.NewClient(kafkatest.Config(broker), slog.New(slog.NewTextHandler(io.Discard, nil)), "chaos-changelog",
		kgo.ConsumeTopics("hookstream.evaluator.changelog"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return false
		}
		found := false
		fs.EachRecord(func(r *kgo.Record) { found = found || bytes.Contains(r.Key, sub) })
		if found {
			return true
		}
	}
}
