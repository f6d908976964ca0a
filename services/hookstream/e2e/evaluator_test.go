package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/hookstream/hookstream/pkg/catalog/catalogtest"
	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/kafka/kafkatest"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

// Campaigns whose decisions depend on per-user state, so that a lost or
// wrongly restored state changes the triggers.
const statefulCampaigns = `apiVersion: hookstream.dev/v1
kind: Webhook
metadata: {name: crm}
spec: {url: https://crm.example.com/hook}
---
apiVersion: hookstream.dev/v1
kind: Segment
metadata: {name: repeat-viewers}
spec: {event: {name: A, count: {gte: 2}, in: 7d}}
---
apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: a-then-b}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger: {type: actions, actions: [{event: A}, {event: B}], within: 1h, ordered: true}
  what: {payload: {profileVariables: [Identity]}}
---
apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: launched-never-bought}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger: {type: inaction, action: {event: Launched}, inaction: {event: Charged}}
  what: {payload: {profileVariables: [Identity]}}
---
apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: canadian-charge}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger: {type: actions_with_user_properties, action: {event: Charged}, profile: [{property: Country, op: eq, value: Canada}]}
  what: {payload: {profileVariables: [Identity]}}
---
apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: repeat-a}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger: {type: single_action, action: {event: A}}
  who: {segment: repeat-viewers}
  what: {payload: {profileVariables: [Identity]}}
`

// stream is a deterministic sequence of events for users u-0..u-(n-1).
func stream(users, rounds int) []*hookstreamv1.Event {
	base := time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)
	var out []*hookstreamv1.Event
	seq := 0
	add := func(kind hookstreamv1.Event_Kind, u int, name string, at time.Time, props map[string]any) {
		b, _ := json.Marshal(props)
		seq++
		out = append(out, &hookstreamv1.Event{Kind: kind, Id: fmt.Sprintf("ev-%d", seq), Identity: fmt.Sprintf("u-%d", u), Name: name, TsMs: at.UnixMilli(), PropertiesJson: b})
	}
	for r := 0; r < rounds; r++ {
		for u := 0; u < users; u++ {
			at := base.Add(time.Duration(r)*10*time.Minute + time.Duration(u)*time.Second)
			switch (r + u) % 5 {
			case 0:
				country := "India"
				if (u+r)%3 == 0 {
					country = "Canada"
				}
				add(hookstreamv1.Event_KIND_PROFILE, u, "", at, map[string]any{"Country": country})
			case 1:
				add(hookstreamv1.Event_KIND_EVENT, u, "A", at, nil)
			case 2:
				add(hookstreamv1.Event_KIND_EVENT, u, "B", at, nil)
			case 3:
				add(hookstreamv1.Event_KIND_EVENT, u, "Launched", at, nil)
			case 4:
				add(hookstreamv1.Event_KIND_EVENT, u, "Charged", at, nil)
			}
		}
	}
	return out
}

// evalCluster is a test broker with the campaigns applied, a producer of
// events and a reader of triggers.
type evalCluster struct {
	t      *testing.T
	broker *kafkatest.Cluster
	cl     *kgo.Client
	mu     sync.Mutex
	ids    map[string]int
}

func newEvalCluster(t *testing.T) *evalCluster {
	kc := kafkatest.New(t)
	cfg := kc.Config()
	catalogtest.New(t, cfg, statefulCampaigns)
	cl, err := kafka.NewClient(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), "test",
		kgo.ConsumeTopics(cfg.Topics().Triggers), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	c := &evalCluster{t: t, broker: kc, cl: cl, ids: map[string]int{}}
	go func() {
		for {
			fs := cl.PollFetches(context.Background())
			if fs.IsClientClosed() {
				return
			}
			fs.EachRecord(func(r *kgo.Record) {
				var tr hookstreamv1.Trigger
				if proto.Unmarshal(r.Value, &tr) == nil {
					c.mu.Lock()
					c.ids[tr.Id]++
					c.mu.Unlock()
				}
			})
		}
	}()
	return c
}

func (c *evalCluster) produce(evs []*hookstreamv1.Event) {
	var recs []*kgo.Record
	for _, ev := range evs {
		v, _ := proto.Marshal(ev)
		recs = append(recs, &kgo.Record{Topic: "hookstream.events", Key: []byte(ev.Identity), Value: v})
	}
	if err := kafka.ProduceSync(context.Background(), c.cl, recs...); err != nil {
		c.t.Fatal(err)
	}
}

func (c *evalCluster) triggerIDs() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.ids))
	for k, v := range c.ids {
		out[k] = v
	}
	return out
}

// settle waits until no new trigger has arrived for a while and at least
// min have.
func (c *evalCluster) settle(min int) map[string]int {
	c.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	last, stableSince := -1, time.Now()
	for time.Now().Before(deadline) {
		n := 0
		for _, v := range c.triggerIDs() {
			n += v
		}
		if n != last {
			last, stableSince = n, time.Now()
		}
		if len(c.triggerIDs()) >= min && time.Since(stableSince) > 3*time.Second {
			return c.triggerIDs()
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatalf("triggers did not settle (have %d distinct, want at least %d)", len(c.triggerIDs()), min)
	return nil
}

// serveProcess is a `hookstream serve TARGET` child process.
type serveProcess struct {
	cmd  *exec.Cmd
	done chan struct{}
	http string
	log  string
}

func startServe(t *testing.T, target, broker, dataDir, instance string) *serveProcess {
	t.Helper()
	return startServeWith(t, target, broker, dataDir, instance)
}

func startServeWith(t *testing.T, target, broker, dataDir, instance string, extra ...string) *serveProcess {
	t.Helper()
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	logf, err := os.CreateTemp(t.TempDir(), target+"-*.log")
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"serve", target, "-kafka.brokers=" + broker, "-kafka.partitions=3", "-server.listen-address=" + httpAddr,
		"-evaluator.data-dir=" + dataDir, "-timer.data-dir=" + dataDir + "-timer", "-log.level=debug"}
	if instance != "" {
		args = append(args, "-evaluator.instance-id="+instance)
	}
	args = append(args, extra...)
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &serveProcess{cmd: cmd, done: make(chan struct{}), http: httpAddr, log: logf.Name()}
	go func() { _ = cmd.Wait(); logf.Close(); close(p.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			lines := strings.Split(string(b), "\n")
			if len(lines) > 60 {
				lines = lines[len(lines)-60:]
			}
			t.Logf("%s log:\n%s", target, strings.Join(lines, "\n"))
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get("http://" + httpAddr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited before ready", target)
		default:
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s not ready in 60s", target)
	return nil
}

func (p *serveProcess) kill()      { _ = p.cmd.Process.Signal(syscall.SIGKILL); <-p.done }
func (p *serveProcess) terminate() { _ = p.cmd.Process.Signal(syscall.SIGTERM); <-p.done }
func sortedKeys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func compareTriggers(t *testing.T, want, got map[string]int) {
	t.Helper()
	var missing, extra []string
	for id := range want {
		if got[id] == 0 {
			missing = append(missing, id)
		}
	}
	for id := range got {
		if want[id] == 0 {
			extra = append(extra, id)
		}
	}
	if len(missing) > 0 || len(extra) > 0 {
		t.Fatalf("triggers differ from the uninterrupted run: %d missing %v, %d extra %v", len(missing), missing, len(extra), extra)
	}
}

// uninterrupted runs the stream through one evaluator that is never
// disturbed and returns its trigger ids.
func uninterrupted(t *testing.T, evs []*hookstreamv1.Event) map[string]int {
	c := newEvalCluster(t)
	startServe(t, "evaluator", c.broker.Addr(), t.TempDir()+"/ev", "")
	c.produce(evs)
	got := c.settle(1)
	for id, n := range got {
		if n != 1 {
			t.Fatalf("uninterrupted run emitted %s %d times", id, n)
		}
	}
	return got
}

// Kill the evaluator mid-stream with no graceful stop, delete its Pebble
// directory, restart: the state comes back from the changelog and the
// triggers (deduplicated by id) equal an uninterrupted run's.
func TestEvaluatorCrashAndRestoreFromChangelog(t *testing.T) {
	evs := stream(60, 40)
	want := uninterrupted(t, evs)

	c := newEvalCluster(t)
	dir := t.TempDir() + "/ev"
	p := startServe(t, "evaluator", c.broker.Addr(), dir, "")
	third := len(evs) / 3
	c.produce(evs[:third])
	c.settle(1)
	c.produce(evs[third : 2*third])
	p.kill() // while the second part is being consumed

	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	startServe(t, "evaluator", c.broker.Addr(), dir, "")
	c.produce(evs[2*third:])
	got := c.settle(len(want))
	compareTriggers(t, want, got)
	dups := 0
	for _, n := range got {
		dups += n - 1
	}
	t.Logf("%d events, %d distinct triggers as uninterrupted, %d re-emitted duplicates (deduplicated by id downstream)", len(evs), len(got), dups)
}

// Two evaluators share the partitions; one leaves and rejoins mid-stream:
// the triggers equal a single instance's.
func TestEvaluatorRebalance(t *testing.T) {
	evs := stream(60, 40)
	want := uninterrupted(t, evs)

	c := newEvalCluster(t)
	base := t.TempDir()
	startServe(t, "evaluator", c.broker.Addr(), base+"/one", "one")
	two := startServe(t, "evaluator", c.broker.Addr(), base+"/two", "two")
	third := len(evs) / 3
	c.produce(evs[:third])
	c.settle(1)
	two.terminate()
	c.produce(evs[third : 2*third])
	c.settle(1)
	startServe(t, "evaluator", c.broker.Addr(), base+"/two", "two")
	c.produce(evs[2*third:])
	got := c.settle(len(want))
	compareTriggers(t, want, got)
}
