package dispatcher

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/protobuf/proto"

	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/redisconn/redistest"
	"github.com/hookstream/hookstream/pkg/webhook"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

// benchInFlight is the webhook's maxInFlight in the benchmark, and the
// number of goroutines of the bare client loop it is compared with.
const benchInFlight = 32

// countingReceiver counts requests and the profiles in them, and notes
// when the first and the last arrived.
type countingReceiver struct {
	*httptest.Server
	requests, profiles atomic.Int64
	first, last        atomic.Int64 // Unix ns
	firstProfiles      atomic.Int64 // profiles in the first request
}

// reset starts counting again.
func (r *countingReceiver) reset() {
	r.requests.Store(0)
	r.profiles.Store(0)
	r.first.Store(0)
	r.last.Store(0)
}

// rate is the profiles per second from the first request to the last,
// those of the first not counted (they arrived at its start).
func (r *countingReceiver) rate() float64 {
	d := time.Duration(r.last.Load() - r.first.Load())
	if d <= 0 {
		return 0 // one request: no rate (b.N too small)
	}
	return float64(r.profiles.Load()-r.firstProfiles.Load()) / d.Seconds()
}

var identityField = []byte(`"Identity"`)

func newCountingReceiver(tb testing.TB, latency time.Duration) *countingReceiver {
	r := &countingReceiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if latency > 0 {
			time.Sleep(latency)
		}
		body, _ := io.ReadAll(req.Body)
		n := int64(bytes.Count(body, identityField))
		now := time.Now().UnixNano()
		if r.first.CompareAndSwap(0, now) {
			r.firstProfiles.Store(n)
		}
		r.profiles.Add(n)
		r.requests.Add(1)
		r.last.Store(now)
		w.WriteHeader(http.StatusOK)
	}))
	tb.Cleanup(r.Close)
	return r
}

// roundTrips counts Redis round trips: a command or a pipeline each.
type roundTrips struct{ n atomic.Int64 }

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h.n.Add(1); return next(ctx, cmd) }
}
func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { h.n.Add(1); return next(ctx, cmds) }
}

// bare posts bodies to url from benchInFlight goroutines over one
// keep-alive HTTP/1.1 client: what a hand-written sender would do.
func bare(tb testing.TB, url string, bodies [][]byte) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: benchInFlight, DialContext: (&net.Dialer{}).DialContext}}
	defer client.CloseIdleConnections()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range benchInFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if int(i) >= len(bodies) {
					return
				}
				req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(bodies[i]))
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					tb.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
}

// BenchmarkDispatch measures webhooks delivered per second from the
// triggers topic to a local receiver (real redis-server, in-process Kafka),
// next to the bare client loop posting the same bodies to the same
// receiver in the same run, and the Redis round trips per delivery.
// One op is one trigger (one profile).
//
// Two receivers: one that answers at once (the dispatcher's own cost
// shows), and one that takes 5ms per request, like an endpoint across a
// network (the request rate is then bound by maxInFlight / latency, which
// is what batching lifts).
func BenchmarkDispatch(b *testing.B) {
	// Tracing off, as a process without OTEL_* settings runs
	// (telemetry.NewTracing installs the no-op provider).
	otel.SetTracerProvider(noop.NewTracerProvider())
	addr := redistest.StartReal(b)
	for _, latency := range []time.Duration{0, 5 * time.Millisecond} {
		for _, batched := range []bool{false, true} {
			name := fmt.Sprintf("receiver-%s/unbatched", latency)
			if batched {
				name = fmt.Sprintf("receiver-%s/batched-100", latency)
			}
			b.Run(name, func(b *testing.B) { benchDispatch(b, addr, batched, latency) })
		}
	}
}

func benchDispatch(b *testing.B, addr string, batched bool, latency time.Duration) {
	b.StopTimer()
	rcv := newCountingReceiver(b, latency)
	what := "what: {keyValues: {PromoCode: MT50}, payload: {profileVariables: [Identity, Email]}}"
	if batched {
		what = "what: {keyValues: {PromoCode: MT50}, payload: {profileVariables: [Identity, Email]}, batch: {maxProfiles: 100, linger: 50ms}}"
	}
	rt := &roundTrips{}
	// Default settings: the burst of b.N waits in Kafka while the webhook's
	// queue is full (the endpoint is fast: nothing goes to the timer
	// service, which does not run here).
	e := newEnv(b, redistest.Real, envOptions{redis: addr, noTimer: true, hook: rt, noReader: true,
		manifest: webhookYAML("bench", rcv.URL, fmt.Sprintf("maxInFlight: %d", benchInFlight)) + campaignYAML("bench", "bench", what)})
	run := fmt.Sprintf("%d-%d", time.Now().UnixNano(), b.N)

	// Warm up: the consumer group has joined and connections are open.
	e.send(trig("warm-"+run, "bench", "warm"))
	e.eventually("the warm-up delivery", func() bool { return rcv.requests.Load() >= 1 })
	rcv.reset()

	c, _ := e.cat.Campaign("bench")
	trs := make([]*hookstreamv1.Trigger, b.N)
	recs := make([]*kgo.Record, b.N)
	topic := e.kcfg.Topics().Triggers
	for i := range trs {
		trs[i] = trig(fmt.Sprintf("bench-%s-%d", run, i), "bench", fmt.Sprintf("user-%d", i))
		v, _ := proto.Marshal(trs[i])
		recs[i] = &kgo.Record{Topic: topic, Key: []byte(trs[i].Identity), Value: v}
	}
	// The bare loop posts the very bodies the dispatcher renders.
	r := webhook.NewRenderer()
	var bodies [][]byte
	per := 1
	if batched {
		per = 100
	}
	for i := 0; i < len(trs); i += per {
		req, err := r.Render(c, trs[i:min(i+per, len(trs))], nil, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		bodies = append(bodies, req.Body)
	}
	bareCPU := cpuTime(b)
	bare(b, rcv.URL+"/hook", bodies)
	bareCPU = cpuTime(b) - bareCPU
	barePerSec := rcv.rate()
	rcv.reset()
	rt.n.Store(0)

	// The triggers are in the topic before the clock starts: producing
	// them is the evaluator's work, not the dispatcher's (in this process
	// it would also be counted against the dispatcher's CPU).
	e.d.cl.PauseFetchTopics(topic)
	if err := kafka.ProduceSync(context.Background(), e.client, recs...); err != nil {
		b.Fatal(err)
	}
	// Both rates are timed by the receiver, from the first request to the
	// last, and so is the benchmark (ns/op, CPU): resuming a paused topic
	// waits for the fetch in flight, up to the fetch's 5s max wait.
	e.d.cl.ResumeFetchTopics(topic)
	deadline := time.Now().Add(2 * time.Minute)
	for rcv.first.Load() == 0 {
		if time.Now().After(deadline) {
			b.Fatal("no request arrived")
		}
		time.Sleep(200 * time.Microsecond)
	}
	b.StartTimer()
	cpu := cpuTime(b)
	for rcv.profiles.Load() < int64(b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d profiles arrived", rcv.profiles.Load(), b.N)
		}
		time.Sleep(200 * time.Microsecond)
	}
	cpu = cpuTime(b) - cpu
	b.StopTimer()

	perSec := rcv.rate()
	unit := "webhooks/s"
	if batched {
		unit = "profiles/s"
	}
	b.ReportMetric(perSec, unit)
	b.ReportMetric(barePerSec, "bare-"+unit)
	b.ReportMetric(perSec/barePerSec, "x-bare")
	// CPU time of the test process (dispatcher, broker, receiver; not
	// redis-server) per profile: on a shared machine it moves far less
	// than the rates.
	b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(b.N), "cpu-us/profile")
	b.ReportMetric(float64(bareCPU.Nanoseconds())/1e3/float64(b.N), "bare-cpu-us/profile")
	b.ReportMetric(float64(rcv.requests.Load()), "requests")
	// Round trips keep running after the last request arrives (recording
	// outcomes); wait for the last records to be done before counting.
	e.eventually("every outcome recorded", func() bool { return e.d.tracker.pendingCount() == 0 })
	b.ReportMetric(float64(rt.n.Load())/float64(b.N), "redis-rt/delivery")
}

// cpuTime is the CPU time (user and system) the process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
