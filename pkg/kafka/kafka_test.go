package kafka_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/kafka/kafkatest"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestEnsureTopicsCreatesContractTopicsWithCompaction(t *testing.T) {
	c := kafkatest.New(t)
	cfg := c.Config()
	cl, err := kafka.NewClient(cfg, quiet(), "test")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	specs := cfg.TopicSpecs()
	if err := kafka.EnsureTopics(ctx, cl, -1, specs); err != nil {
		t.Fatal(err)
	}
	// A second call (a restart) is fine.
	if err := kafka.EnsureTopics(ctx, cl, -1, specs); err != nil {
		t.Fatalf("second EnsureTopics: %v", err)
	}
	// CONTRACT.md section 6: campaigns and timers are compacted, and so is
	// each stateful service's changelog; every other topic deletes by
	// retention. Named here rather than read from the specs, so that a spec
	// that loses (or gains) its Compacted flag fails the test.
	compacted := map[string]bool{
		"hookstream.campaigns":           true,
		"hookstream.timers":              true,
		"hookstream.evaluator.changelog": true,
	}
	deleted := []string{
		"hookstream.events.raw", "hookstream.events", "hookstream.events.dlq", "hookstream.triggers",
		"hookstream.deliveries", "hookstream.dispatch.dlq", "hookstream.dispatch.retry", "hookstream.conversions",
	}
	names := make([]string, 0, len(compacted)+len(deleted))
	for n := range compacted {
		names = append(names, n)
	}
	names = append(names, deleted...)
	if len(specs) != len(names) {
		t.Errorf("%d topic specs, want the %d topics named here: %+v", len(specs), len(names), specs)
	}
	adm := kadm.NewClient(cl)
	details, err := adm.ListTopics(ctx, names...)
	if err != nil {
		t.Fatal(err)
	}
	configs, err := adm.DescribeTopicConfigs(ctx, names...)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		d, ok := details[name]
		if !ok || d.Err != nil {
			t.Errorf("contract topic %s not created: %v", name, d.Err)
			continue
		}
		rc, err := configs.On(name, nil)
		if err != nil {
			t.Fatal(err)
		}
		policy := ""
		for _, c := range rc.Configs {
			if c.Key == "cleanup.policy" && c.Value != nil {
				policy = *c.Value
			}
		}
		want := "delete"
		if compacted[name] {
			want = "compact"
		}
		if policy != want {
			t.Errorf("%s: cleanup.policy=%q, want %q", name, policy, want)
		}
	}
	for _, s := range specs {
		d, ok := details[s.Name]
		if !ok {
			t.Errorf("topic spec %s is not a contract topic named here", s.Name)
			continue
		}
		if got := int32(len(d.Partitions)); got != s.Partitions {
			t.Errorf("%s: %d partitions, want %d", s.Name, got, s.Partitions)
		}
	}
}

// A handler failure is retried on the same batch; a consumer that stops and a
// new member of the group resume after the last handled record, with nothing
// skipped and nothing handled twice after a clean stop.
func TestConsumerCommitsOnlyAfterHandling(t *testing.T) {
	c := kafkatest.New(t)
	cfg := c.Config()
	ctx := context.Background()
	prod, err := kafka.NewClient(cfg, quiet(), "producer")
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	topic := "in"
	if err := kafka.EnsureTopics(ctx, prod, -1, []kafka.TopicSpec{{Name: topic, Partitions: 3}}); err != nil {
		t.Fatal(err)
	}
	produce := func(from, to int) {
		var recs []*kgo.Record
		for i := from; i < to; i++ {
			recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(fmt.Sprint(i % 7)), Value: []byte(fmt.Sprint(i))})
		}
		if err := kafka.ProduceSync(ctx, prod, recs...); err != nil {
			t.Fatal(err)
		}
	}
	produce(0, 100)

	var mu sync.Mutex
	seen := map[string]int{}
	failOnce := true
	handler := func(_ context.Context, recs []*kgo.Record) error {
		mu.Lock()
		defer mu.Unlock()
		if failOnce {
			failOnce = false
			return errors.New("broker hiccup")
		}
		for _, r := range recs {
			seen[string(r.Value)]++
		}
		return nil
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(seen)
	}
	run := func(want int) {
		cons, err := kafka.NewConsumer(cfg, quiet(), "test", kafka.ConsumerConfig{Group: "g", Topics: []string{topic}}, handler)
		if err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error)
		go func() { done <- cons.Run(rctx) }()
		deadline := time.Now().Add(20 * time.Second)
		for count() < want {
			if time.Now().After(deadline) {
				t.Fatalf("handled %d records, want %d", count(), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		cons.Close()
	}
	run(100)
	produce(100, 150)
	run(150)
	mu.Lock()
	defer mu.Unlock()
	for i := 0; i < 150; i++ {
		if n := seen[fmt.Sprint(i)]; n != 1 {
			t.Errorf("record %d handled %d times, want 1", i, n)
		}
	}
}

// kcat (librdkafka) is an independent client: it must be able to produce to
// and consume from the embedded broker.
func TestKcatProducesToEmbeddedBroker(t *testing.T) {
	kcat := kafkatest.RequireKcat(t)
	c := kafkatest.New(t)
	cfg := c.Config()
	cl, err := kafka.NewClient(cfg, quiet(), "test", kgo.ConsumeTopics("hookstream.events.raw"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kafka.EnsureTopics(ctx, cl, -1, cfg.TopicSpecs()); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, kcat, "-b", c.Addr(), "-t", "hookstream.events.raw", "-P", "-K", "|")
	cmd.Stdin = strings.NewReader("u-1|{\"a\":1}\nu-2|{\"a\":2}\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kcat: %v: %s", err, out)
	}
	got := map[string]string{}
	for len(got) < 2 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("got %v before timeout", got)
		}
		fs.EachRecord(func(r *kgo.Record) { got[string(r.Key)] = string(r.Value) })
	}
	if got["u-1"] != `{"a":1}` || got["u-2"] != `{"a":2}` {
		t.Fatalf("records = %v", got)
	}
	// And kcat reads what franz-go wrote.
	if err := kafka.ProduceSync(ctx, cl, &kgo.Record{Topic: "hookstream.triggers", Key: []byte("k"), Value: []byte("hello")}); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, kcat, "-b", c.Addr(), "-t", "hookstream.triggers", "-C", "-e", "-q", "-f", "%k=%s\n").Output()
	if err != nil {
		t.Fatalf("kcat consume: %v", err)
	}
	if !bytes.Contains(out, []byte("k=hello")) {
		t.Fatalf("kcat read %q", out)
	}
}
