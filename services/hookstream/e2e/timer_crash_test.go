package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/kafka/kafkatest"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
	"github.com/hookstream/hookstream/services/timer"
)

// timerProcess is a running `hookstream serve timer`.
type timerProcess struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func startTimer(t *testing.T, broker, dataDir string, extra ...string) *timerProcess {
	t.Helper()
	logf, err := os.CreateTemp(t.TempDir(), "timer-*.log")
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"serve", "timer", "-kafka.brokers=" + broker, "-kafka.partitions=3", "-timer.data-dir=" + dataDir,
		"-server.listen-address=127.0.0.1:0", "-log.format=text"}, extra...)
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &timerProcess{cmd: cmd, log: logf.Name(), done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); logf.Close(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			lines := strings.Split(string(b), "\n")
			t.Logf("hookstream serve timer log (last lines):\n%s", strings.Join(lines[max(0, len(lines)-60):], "\n"))
		}
	})
	return p
}

// kill9 kills the process with SIGKILL: no graceful stop, no flush.
func (p *timerProcess) kill9(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done
}

func (p *timerProcess) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
		if p.err != nil {
			t.Fatalf("hookstream serve timer exited with %v after SIGTERM, want 0", p.err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("hookstream serve timer did not stop within 60s of SIGTERM")
	}
}

// timerFirings counts what the timer service produced to the destination topic.
type timerFirings struct {
	mu    sync.Mutex
	count map[string]int
	total int
	bad   []string
}

func (f *timerFirings) add(r *kgo.Record, due map[string]int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := string(r.Key)
	f.total++
	f.count[id]++
	var hdrDue, hdrID string
	for _, h := range r.Headers {
		switch h.Key {
		case timer.HeaderTimerDueMs:
			hdrDue = string(h.Value)
		case timer.HeaderTimerID:
			hdrID = string(h.Value)
		}
	}
	if want, ok := due[id]; (!ok || string(r.Value) != id || hdrID != id || hdrDue != strconv.FormatInt(want, 10)) && len(f.bad) < 10 {
		f.bad = append(f.bad, fmt.Sprintf("id %q value %q headers id=%q due=%q (want due %d)", id, r.Value, hdrID, hdrDue, want))
	}
}

func (f *timerFirings) distinct() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.count)
}

func timerWaitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The timer service is killed with SIGKILL twice: first with 100,000
// timers pending and none due yet, then in the middle of firing them; each
// time it restarts on the same disk or on an empty one. After deduplication
// by timer id every timer fired exactly once and none is lost. -short runs
// 10,000 timers.
func TestTimerCrashFiresEveryTimerOnce(t *testing.T) {
	n, margin := 100_000, 90*time.Second
	if testing.Short() {
		n, margin = 10_000, 8*time.Second
	}
	for _, keepDisk := range []bool{true, false} {
		name := "keep-disk"
		if !keepDisk {
			name = "new-disk"
		}
		t.Run(name, func(t *testing.T) { timerCrash(t, n, margin, keepDisk) })
	}
}

// timerCrash schedules n timers due from margin on (margin covers producing
// them, starting the service and applying them), plus one sentinel timer
// per partition that is due at once.
func timerCrash(t *testing.T, n int, margin time.Duration, keepDisk bool) {
	start := time.Now()
	kc := kafkatest.New(t)
	cfg := kc.Config()
	const dest = "crash.out"
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cl, err := kafka.NewClient(cfg, log, "crash-test", kgo.ConsumeTopics(dest), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	if err := kafka.EnsureTopics(ctx, cl, -1, append(cfg.TopicSpecs(), kafka.TopicSpec{Name: dest, Partitions: 3})); err != nil {
		t.Fatal(err)
	}

	// kafkatest compacts every 500ms; a pass over a few hundred thousand
	// records holds kfake's single loop for seconds under -race, so compact
	// every 5s here. Compaction still runs while the timers fire.
	cleaner := "5000"
	if res, err := kadm.NewClient(cl).AlterBrokerConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "log.cleaner.backoff.ms", Value: &cleaner}}, 0); err != nil || res[0].Err != nil {
		t.Fatalf("slowing kfake's cleaner: %v %v", err, res)
	}

	// n timers due over 10 seconds from margin on, in a shuffled order of
	// due times across partitions.
	base := time.Now().Add(margin)
	due := make(map[string]int64, n+3)
	recs := make([]*kgo.Record, 0, n)
	for i := range n {
		id := fmt.Sprintf("t-%06d", i)
		d := base.Add(time.Duration((i*7919)%n) * 10 * time.Second / time.Duration(n)).UnixMilli()
		due[id] = d
		rec, err := timer.Schedule(cfg.Topics(), &hookstreamv1.TimerCommand{Id: id, DueMs: d, DestinationTopic: dest, DestinationKey: []byte(id), Payload: []byte(id), Owner: "crash-test"})
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, rec)
	}
	if err := kafka.ProduceSync(ctx, cl, recs...); err != nil {
		t.Fatal(err)
	}
	// Each sentinel is the last record of its partition and the service
	// applies a partition in order: its firing shows that all of the
	// partition's timers are in the service's state.
	sentinels := make([]*kgo.Record, 0, 3)
	now := time.Now().UnixMilli()
	for p := range int32(3) {
		id := fmt.Sprintf("sentinel-%d", p)
		due[id] = now
		rec, err := timer.Schedule(cfg.Topics(), &hookstreamv1.TimerCommand{Id: id, DueMs: now, DestinationTopic: dest, DestinationKey: []byte(id), Payload: []byte(id), Owner: "crash-test"})
		if err != nil {
			t.Fatal(err)
		}
		rec.Partition = p
		sentinels = append(sentinels, rec)
	}
	manual, err := kafka.NewClient(cfg, log, "crash-test-sentinels", kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	err = kafka.ProduceSync(ctx, manual, sentinels...)
	manual.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("scheduled %d timers (%v)", n, time.Since(start).Round(time.Millisecond))

	f := &timerFirings{count: map[string]int{}}
	consumed := make(chan struct{})
	go func() {
		defer close(consumed)
		for {
			fs := cl.PollFetches(context.Background())
			if fs.IsClientClosed() {
				return
			}
			fs.EachRecord(func(r *kgo.Record) { f.add(r, due) })
		}
	}()
	t.Cleanup(func() { cl.Close(); <-consumed })

	dir := filepath.Join(t.TempDir(), "timer")
	crashed := func(what string) {
		t.Helper()
		t.Logf("killed with -9 %s (%v)", what, time.Since(start).Round(time.Millisecond))
		if !keepDisk {
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Static membership, as a pod name gives in Kubernetes: the restarted
	// process takes the killed one's place without waiting for its session
	// to time out.
	args := []string{"-timer.fire-rate=20000", "-timer.instance-id=crash-test"}
	p := startTimer(t, kc.Addr(), dir, args...)
	timerWaitUntil(t, margin, "the sentinel of every partition to fire", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.count["sentinel-0"] > 0 && f.count["sentinel-1"] > 0 && f.count["sentinel-2"] > 0
	})
	t.Logf("every partition caught up (%v); the first timer is due in %v", time.Since(start).Round(time.Millisecond), time.Until(base).Round(time.Millisecond))
	p.kill9(t)
	if got := f.distinct(); got != 3 || !time.Now().Before(base) {
		t.Fatalf("the kill came %v before the first timer was due and after %d had fired, want it before any was due: the margin of %v is too short for this machine",
			time.Until(base).Round(time.Millisecond), got-3, margin)
	}
	crashed(fmt.Sprintf("with all %d timers pending", n))

	p = startTimer(t, kc.Addr(), dir, args...)
	timerWaitUntil(t, margin+120*time.Second, "a third of the timers to fire", func() bool { return f.distinct() >= 3+n/3 })
	p.kill9(t)
	killedAt := f.distinct() - 3
	if killedAt >= n {
		t.Fatalf("every timer fired before the second kill: the test did not kill mid-firing")
	}
	crashed(fmt.Sprintf("after %d of %d timers fired", killedAt, n))

	p = startTimer(t, kc.Addr(), dir, args...)
	timerWaitUntil(t, 300*time.Second, "every timer to fire", func() bool { return f.distinct() >= n+3 })
	time.Sleep(2 * time.Second) // anything fired twice arrives too
	p.stop(t)

	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.bad) > 0 {
		t.Fatalf("fired records that are not the scheduled timers:\n%s", strings.Join(f.bad, "\n"))
	}
	for id := range due {
		if f.count[id] == 0 {
			t.Fatalf("timer %s never fired", id)
		}
	}
	if len(f.count) != n+3 {
		t.Fatalf("%d distinct timers fired, want %d", len(f.count), n+3)
	}
	t.Logf("every one of %d timers fired; %d records in all (%d fired again after the crashes) in %v",
		n, f.total-3, f.total-n-3, time.Since(start).Round(time.Millisecond))
}
