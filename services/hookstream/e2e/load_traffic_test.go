package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// loadOwed is a webhook the stream owes: its campaign and when it is due
// (the event's time, or the event's time + the window for an abandoned
// cart), in Unix microseconds.
type loadOwed struct {
	campaign string
	dueUs    int64
}

// loadProducer produces the raw event stream at a steady rate, keyed by
// identity like a real producer, with franz-go's default batching (10ms
// linger), and remembers which events owe a webhook. Every event that can
// cause one carries its sequence number and its timestamp in microseconds
// ("seq", "t") in its properties, which come back in the webhook's
// Event_properties.
type loadProducer struct {
	cl     *kgo.Client
	rng    *rand.Rand
	users  int
	ratio  float64
	window time.Duration

	seq         int64
	generated   int64
	maxBehind   int64
	acked, errs atomic.Int64
	owedMu      sync.Mutex
	owed        map[int64]loadOwed
	start, end  time.Time
}

type loadProduced struct {
	generated, acked, errors, owed, maxBehind int64
	elapsed                                   time.Duration
}

func newLoadProducer(t *testing.T, broker string, cfg loadConfig) *loadProducer {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker), kgo.DefaultProduceTopic("hookstream.events.raw"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return &loadProducer{cl: cl, rng: rand.New(rand.NewSource(cfg.seed)), users: cfg.users, ratio: cfg.ratio, window: cfg.window,
		owed: map[int64]loadOwed{}}
}

// warmUp sends one purchase (seq 0, not counted) and waits for its webhook.
func (p *loadProducer) warmUp(t *testing.T, recv *loadReceiver, timeout time.Duration) {
	t.Helper()
	now := time.Now()
	rec := &kgo.Record{Key: []byte("warm-up"), Value: loadEvent(nil, "warm-up", "Purchased", now, 0, "")}
	if err := p.cl.ProduceSync(context.Background(), rec).FirstErr(); err != nil {
		t.Fatalf("produce the warm-up event: %v", err)
	}
	deadline := time.Now().Add(timeout)
	for !recv.has(0) {
		if time.Now().After(deadline) {
			t.Fatalf("the warm-up webhook did not arrive in %v", timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// run produces at cfg.rate for cfg.duration, pacing every 5ms, then waits
// for every acknowledgement.
func (p *loadProducer) run(cfg loadConfig) {
	p.start = time.Now()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	total := int64(cfg.rate) * int64(cfg.duration) / int64(time.Second)
	for p.generated < total {
		<-tick.C
		target := min(total, int64(time.Since(p.start).Seconds()*float64(cfg.rate)))
		p.maxBehind = max(p.maxBehind, target-p.generated)
		for p.generated < target {
			p.next()
		}
	}
	p.end = time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_ = p.cl.Flush(ctx)
}

// next produces one slot of the mix: with probability ratio an event that
// owes a webhook (4/5 a purchase, fired at once; 1/5 an abandoned cart,
// fired by the timer after the window); with probability ratio/5 a cart
// bought right away (two events, owes nothing: the timer is cancelled);
// 5 % profile updates; the rest page views with a price, which a third
// campaign's filter evaluates and never matches.
func (p *loadProducer) next() {
	p.seq++
	seq := p.seq
	user := "u-" + strconv.Itoa(p.rng.Intn(p.users))
	now := time.Now()
	x := p.rng.Float64()
	var recs []*kgo.Record
	add := func(v []byte) { recs = append(recs, &kgo.Record{Key: []byte(user), Value: v}) }
	switch {
	case x < p.ratio*0.8:
		add(loadEvent(nil, user, "Purchased", now, seq, `,"total":`+strconv.Itoa(1+int(seq%500))))
		p.owe(seq, "load-purchase", now)
	case x < p.ratio:
		add(loadEvent(nil, user, "Carted", now, seq, `,"sku":"s-`+strconv.FormatInt(seq, 10)+`"`))
		p.owe(seq, "load-cart-abandon", now.Add(p.window))
	case x < p.ratio*1.2:
		sku := `,"sku":"s-` + strconv.FormatInt(seq, 10) + `"`
		add(loadEvent(nil, user, "Carted", now, seq, sku))
		p.seq++
		add(loadEvent(nil, user, "Bought", now.Add(time.Millisecond), p.seq, sku))
	case x < p.ratio*1.2+0.05:
		country := [...]string{"Canada", "India", "France", "Brazil"}[seq%4]
		add(fmt.Appendf(nil, `{"type":"profile","identity":%q,"id":"l-%d","properties":{"Country":%q,"Plan":"p%d"}}`, user, seq, country, seq%3))
	default:
		add(loadEvent(nil, user, "Viewed", now, seq, `,"price":`+strconv.Itoa(int(seq%999))))
	}
	for _, r := range recs {
		p.generated++
		p.cl.Produce(context.Background(), r, func(_ *kgo.Record, err error) {
			if err != nil {
				p.errs.Add(1)
				return
			}
			p.acked.Add(1)
		})
	}
}

func (p *loadProducer) owe(seq int64, campaign string, due time.Time) {
	p.owedMu.Lock()
	p.owed[seq] = loadOwed{campaign: campaign, dueUs: due.UnixMicro()}
	p.owedMu.Unlock()
}

// expected returns the owed webhooks so far (the map is not copied: read
// it only after run has returned, or under owedMu).
func (p *loadProducer) expected() map[int64]loadOwed {
	p.owedMu.Lock()
	defer p.owedMu.Unlock()
	return p.owed
}

func (p *loadProducer) owedCount() int {
	p.owedMu.Lock()
	defer p.owedMu.Unlock()
	return len(p.owed)
}

func (p *loadProducer) stats() loadProduced {
	return loadProduced{generated: p.generated, acked: p.acked.Load(), errors: p.errs.Load(), owed: int64(p.owedCount()),
		maxBehind: p.maxBehind, elapsed: p.end.Sub(p.start)}
}

// loadEvent renders a native event; props (with a leading comma) follow
// "seq" and "t".
func loadEvent(buf []byte, user, name string, ts time.Time, seq int64, props string) []byte {
	return fmt.Appendf(buf, `{"type":"event","identity":%q,"name":%q,"id":"l-%d","ts":%q,"properties":{"seq":%d,"t":%d%s}}`,
		user, name, seq, ts.UTC().Format(time.RFC3339Nano), seq, ts.UnixMicro(), props)
}

// loadReceiver is a real HTTP receiver that answers 200 at once and
// records, per cause (the event's seq), when its first webhook arrived,
// under which webhook-ids, and how often.
type loadReceiver struct {
	*httptest.Server
	mu         sync.Mutex
	got        map[int64]*loadReceipt
	deliveries int64
	badSigs    int
	unparsed   int
}

type loadReceipt struct {
	campaign string
	firstUs  int64
	id       string
	n        int
	otherIDs int
}

func newLoadReceiver(t *testing.T) *loadReceiver {
	r := &loadReceiver{got: map[int64]*loadReceipt{}}
	r.Server = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.Close)
	return r
}

func (r *loadReceiver) serve(w http.ResponseWriter, req *http.Request) {
	at := time.Now().UnixMicro()
	body, _ := io.ReadAll(req.Body)
	w.WriteHeader(http.StatusOK)
	var b struct {
		Campaign string `json:"campaign"`
		Profiles []struct {
			Props struct {
				Seq *int64 `json:"seq"`
				T   int64  `json:"t"`
			} `json:"Event_properties"`
		} `json:"profiles"`
	}
	ok := verifySignature(req.Header, body)
	perr := json.Unmarshal(body, &b)
	id := req.Header.Get("webhook-id")
	r.mu.Lock()
	defer r.mu.Unlock()
	r.deliveries++
	if !ok {
		r.badSigs++
	}
	if perr != nil || len(b.Profiles) != 1 || b.Profiles[0].Props.Seq == nil {
		r.unparsed++
		return
	}
	seq := *b.Profiles[0].Props.Seq
	g := r.got[seq]
	if g == nil {
		r.got[seq] = &loadReceipt{campaign: b.Campaign, firstUs: at, id: id, n: 1}
		return
	}
	g.n++
	if id != g.id {
		g.otherIDs++
	}
}

func (r *loadReceiver) has(seq int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got[seq] != nil
}

// counts returns the deliveries so far and the distinct causes.
func (r *loadReceiver) counts() (deliveries int64, distinct int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.deliveries, len(r.got)
}

func (r *loadReceiver) missing(owed map[int64]loadOwed) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for seq := range owed {
		if r.got[seq] == nil {
			n++
		}
	}
	return n
}

// loadReceived is what the receiver saw, judged against what was owed.
type loadReceived struct {
	owed, delivered, missing int
	missingExamples          []int64
	deliveries               int64
	duplicates               int // the same webhook-id again
	twoIDs                   int // causes sent under more than one webhook-id
	extra                    map[string]int
	badSignatures, unparsed  int
	latency                  map[string][]int64 // µs from due to receipt, per campaign
	points                   []loadPoint        // every owed webhook's receipt, for latency over time
	lastByCampaign           map[string]int64   // the last receipt per campaign (µs)
	lastUs                   int64              // the last owed webhook's receipt
	inWindow                 int                // owed webhooks received while producing
}

// loadPoint is one owed webhook's first receipt and its latency.
type loadPoint struct {
	atUs, latencyUs int64
	campaign        string
}

func (r *loadReceiver) snapshot(owed map[int64]loadOwed, prodStart, prodEnd time.Time) loadReceived {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := loadReceived{owed: len(owed), deliveries: r.deliveries, extra: map[string]int{}, lastByCampaign: map[string]int64{}, badSignatures: r.badSigs, unparsed: r.unparsed, latency: map[string][]int64{}}
	for seq, o := range owed {
		g := r.got[seq]
		if g == nil {
			s.missing++
			if len(s.missingExamples) < 10 {
				s.missingExamples = append(s.missingExamples, seq)
			}
			continue
		}
		s.delivered++
		s.latency[o.campaign] = append(s.latency[o.campaign], g.firstUs-o.dueUs)
		s.points = append(s.points, loadPoint{atUs: g.firstUs, latencyUs: g.firstUs - o.dueUs, campaign: o.campaign})
		s.lastByCampaign[o.campaign] = max(s.lastByCampaign[o.campaign], g.firstUs)
		s.lastUs = max(s.lastUs, g.firstUs)
		if g.firstUs <= prodEnd.UnixMicro() && g.firstUs >= prodStart.UnixMicro() {
			s.inWindow++
		}
	}
	for seq, g := range r.got {
		s.duplicates += g.n - 1 - g.otherIDs
		if g.otherIDs > 0 {
			s.twoIDs++
		}
		if _, ok := owed[seq]; !ok && seq > 0 {
			s.extra[g.campaign]++
		}
	}
	return s
}
