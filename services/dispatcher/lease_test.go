package dispatcher

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hookstream/hookstream/pkg/redisconn"
	"github.com/hookstream/hookstream/pkg/redisconn/redistest"
)

// The plain lease reads the same with one SET NX GET (Redis 7 on) as with
// a SET NX and a GET (older Redis): taken when the key was free; otherwise
// the value found (done: a duplicate; another token: leased elsewhere).
func TestLeaseForms(t *testing.T) {
	for _, b := range redistest.Backends {
		t.Run(string(b), func(t *testing.T) {
			rdb := redisconn.Open(redisconn.Config{Addr: redistest.Start(t, b)})
			defer rdb.Close()
			ctx := context.Background()
			d := &Dispatcher{rdb: rdb, cfg: baseConfig()}
			d.probeSetNXGet(ctx)
			if !d.setNXGet.Load() {
				t.Fatalf("%s does not take SET NX GET", b)
			}
			for _, form := range []string{"set-nx-get", "set-nx-and-get"} {
				t.Run(form, func(t *testing.T) {
					if err := rdb.Set(ctx, form+":done", doneValue, time.Minute).Err(); err != nil {
						t.Fatal(err)
					}
					if err := rdb.Set(ctx, form+":held", "inflight:another", time.Minute).Err(); err != nil {
						t.Fatal(err)
					}
					keys := []string{form + ":free", form + ":done", form + ":held"}
					items := make([]*item, len(keys))
					args := d.checkArgs(time.Now())
					if _, err := runPipeline(ctx, rdb, func(p redis.Pipeliner) {
						args.reset(len(keys))
						for i, k := range keys {
							items[i] = &item{key: k, token: "inflight"}
							if form == "set-nx-get" {
								items[i].setGet = args.setNXGet(ctx, p, &items[i].key, &items[i].token)
							} else {
								items[i].lease = p.SetNX(ctx, k, "inflight", time.Minute)
								items[i].prev = p.Get(ctx, k)
							}
						}
					}); err != nil {
						t.Fatal(err)
					}
					want := []struct {
						took bool
						prev string
					}{{true, ""}, {false, doneValue}, {false, "inflight:another"}}
					for i, it := range items {
						took, prev, err := it.leaseResult()
						if err != nil || took != want[i].took || prev != want[i].prev {
							t.Errorf("%s: took %v, found %q, err %v; want %v, %q", keys[i], took, prev, err, want[i].took, want[i].prev)
						}
					}
					if v, _ := rdb.Get(ctx, form+":free").Result(); v != "inflight" {
						t.Errorf("free key is %q after the lease, want inflight", v)
					}
					if ttl := rdb.PTTL(ctx, form+":free").Val(); ttl <= 0 || ttl > time.Minute && form != "set-nx-get" || ttl > 2*time.Minute {
						t.Errorf("lease TTL %s, want at most the lease TTL", ttl)
					}
					dd := &deduper{rdb: rdb, ttl: 7 * 24 * time.Hour}
					if err := dd.done(ctx, []string{form + ":free"}); err != nil {
						t.Fatal(err)
					}
					if v, ttl := rdb.Get(ctx, form+":free").Val(), rdb.PTTL(ctx, form+":free").Val(); v != doneValue || ttl < 6*24*time.Hour {
						t.Errorf("after done: %q for %s, want done for the dedupe TTL", v, ttl)
					}
					if v, _ := rdb.Get(ctx, form+":done").Result(); v != doneValue {
						t.Errorf("done key is %q after the lease, want it unchanged", v)
					}
				})
			}
		})
	}
}

// A call whose reply was lost and that is sent again (go-redis resends a
// command when the connection fails before the reply; the poll loop
// retries a failed batch) carries the same token: it finds its own lease
// and gets the answer it got the first time, charging nothing twice. A
// call with another token (the same trigger polled again) finds the
// trigger leased.
func TestLeaseTokenResent(t *testing.T) {
	for _, b := range redistest.Backends {
		t.Run(string(b), func(t *testing.T) {
			rdb := redisconn.Open(redisconn.Config{Addr: redistest.Start(t, b)})
			defer rdb.Close()
			ctx := context.Background()
			if err := loadScripts(ctx, rdb); err != nil {
				t.Fatal(err)
			}
			d := &Dispatcher{leasePrefix: newLeasePrefix()}
			tokens := d.leaseTokens(3)
			if tokens[0] == tokens[1] || d.leaseTokens(1)[0] == tokens[2] || newLeasePrefix() == d.leasePrefix {
				t.Fatalf("tokens repeat: %v", tokens)
			}
			now := time.Now()
			nowUs := now.UnixMicro()
			run := func(t *testing.T, s *redis.Script, keys []string, args ...any) verdict {
				t.Helper()
				v, err := parseVerdict(s.Run(ctx, rdb, keys, args...))
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
			t.Run("admit", func(t *testing.T) {
				// maxPerDay 5, a frequency cap of 3 per hour, a throttle of
				// one a second: every counter the script charges.
				keys := []string{keyPrefix + "a1", usersKey("c"), dayKey("c", now), freqKey("c", "u"), throttleKey("c"), rateKey("w")}
				args := func(token string) []any {
					return []any{60000, "0", "u", 0, 5, 172800000, 3, time.Hour.Microseconds(), nowUs, "a1", 0, 1000000, 0, (24 * time.Hour).Microseconds(), token}
				}
				first := run(t, admitScript, keys, args(tokens[0])...)
				again := run(t, admitScript, keys, args(tokens[0])...)
				if first.outcome != "ok" || again.outcome != "ok" || !again.at.Equal(first.at) {
					t.Fatalf("first %+v, resent %+v; want ok twice at the same time", first, again)
				}
				if n, _ := rdb.Get(ctx, dayKey("c", now)).Int(); n != 1 {
					t.Errorf("day counter %d after a resent call, want 1", n)
				}
				if n, _ := rdb.ZCard(ctx, freqKey("c", "u")).Result(); n != 1 {
					t.Errorf("frequency window holds %d sends, want 1", n)
				}
				if tat, _ := rdb.Get(ctx, throttleKey("c")).Int64(); tat != first.at.UnixMicro()+1000000 {
					t.Errorf("throttle TAT %d, want one interval after %d (reserved once)", tat, first.at.UnixMicro())
				}
				if v := run(t, admitScript, keys, args(tokens[1])...); v.outcome != "leased" || v.wait <= 0 {
					t.Errorf("another token: %+v, want leased with the lease's time left", v)
				}
				if err := rdb.Set(ctx, keyPrefix+"a1", doneValue, time.Minute).Err(); err != nil {
					t.Fatal(err)
				}
				for _, tok := range tokens[:2] {
					if v := run(t, admitScript, keys, args(tok)...); v.outcome != "duplicate" {
						t.Errorf("after done: %+v, want duplicate", v)
					}
				}
			})
			t.Run("admit suppressed", func(t *testing.T) {
				keys := []string{keyPrefix + "a2", usersKey("c2"), dayKey("c2", now), freqKey("c2", "u"), throttleKey("c2"), rateKey("w")}
				args := []any{60000, "1", "u", 0, 0, 172800000, 0, 0, nowUs, "a2", 0, 0, 0, 0, tokens[0]}
				for range 2 {
					if v := run(t, admitScript, keys, args...); v.outcome != "control" {
						t.Errorf("%+v, want control", v)
					}
				}
			})
			t.Run("claim", func(t *testing.T) {
				keys := []string{timerKeyPrefix + "retry:x:1:2", "", rateKey("w2")}
				args := func(token string) []any { return []any{60000, nowUs, 0, 1000000, 0, nowUs, token} }
				first := run(t, claimScript, keys, args(tokens[0])...)
				again := run(t, claimScript, keys, args(tokens[0])...)
				if first.outcome != "ok" || again.outcome != "ok" || !again.at.Equal(first.at) {
					t.Fatalf("first %+v, resent %+v; want ok twice at the same time", first, again)
				}
				if tat, _ := rdb.Get(ctx, rateKey("w2")).Int64(); tat != first.at.UnixMicro()+1000000 {
					t.Errorf("rate TAT %d, want one interval after %d (reserved once)", tat, first.at.UnixMicro())
				}
				if v := run(t, claimScript, keys, args(tokens[1])...); v.outcome != "leased" {
					t.Errorf("another token: %+v, want leased", v)
				}
			})
			t.Run("plain", func(t *testing.T) {
				for _, form := range []string{"set-nx-get", "set-nx-and-get"} {
					key := keyPrefix + "p-" + form
					lease := func(token string) (bool, string) {
						it := &item{key: key, token: token}
						args := scriptArgs{leaseMs: "60000"}
						if _, err := runPipeline(ctx, rdb, func(p redis.Pipeliner) {
							args.reset(1)
							if form == "set-nx-get" {
								it.setGet = args.setNXGet(ctx, p, &it.key, &it.token)
							} else {
								it.lease = p.SetNX(ctx, key, token, time.Minute)
								it.prev = p.Get(ctx, key)
							}
						}); err != nil {
							t.Fatal(err)
						}
						took, prev, err := it.leaseResult()
						if err != nil {
							t.Fatal(err)
						}
						return took, prev
					}
					for i, want := range []bool{true, true} {
						if took, prev := lease(tokens[0]); took != want {
							t.Errorf("%s, call %d with the same token: took %v (found %q), want %v", form, i+1, took, prev, want)
						}
					}
					if took, prev := lease(tokens[1]); took || prev != tokens[0] {
						t.Errorf("%s, another token: took %v, found %q; want leased by %q", form, took, prev, tokens[0])
					}
				}
			})
		})
	}
}

// The stall this prevents, end to end: the connection to Redis fails after
// Redis ran a trigger's checks and before their reply arrived; go-redis
// sends them again (or, when its own retries fail too, the dispatcher
// checks the batch again). The trigger is delivered at once, not handed to
// the timer as leased (by itself) until its lease expires.
func TestLostReplyDoesNotStallTheTrigger(t *testing.T) {
	for _, b := range redistest.Backends {
		t.Run(string(b), func(t *testing.T) {
			px := startDropProxy(t, redistest.Start(t, b))
			r := newReceiver(t, 200)
			e := newEnv(t, b, envOptions{redis: px.addr(), manifest: webhookYAML("w", r.URL, "") +
				campaignYAML("plain", "w") + campaignYAML("capped", "w", "limits: {maxPerDay: 10}")})
			for _, tc := range []struct {
				campaign string
				// lost replies: go-redis tries a command 4 times (3
				// retries), so 5 make the dispatcher check the batch again.
				lost int32
			}{{"plain", 1}, {"capped", 1}, {"plain", 5}, {"capped", 5}} {
				c := tc.campaign
				t.Run(fmt.Sprintf("%s, %d lost", c, tc.lost), func(t *testing.T) {
					id := fmt.Sprintf("lost-reply-%s-%d", c, tc.lost)
					before := len(e.of(c))
					px.arm(keyPrefix+id, tc.lost)
					e.send(trig(id, c, "u-"+id))
					got := e.waitRecords(c, before+1)[before:]
					if px.dropped.Load() != tc.lost {
						t.Fatalf("%d replies lost, want %d: the test did not cut the connection", px.dropped.Load(), tc.lost)
					}
					px.dropped.Store(0)
					if status(got[0]) != "DELIVERED" || len(e.timersFor("lease:"+id)) != 0 {
						t.Fatalf("%v, lease timers %d; want DELIVERED at once\n%s", status(got[0]), len(e.timersFor("lease:"+id)), e.dump())
					}
					if c == "capped" {
						sent := len(e.of(c))
						if n, _ := e.rdb.Get(context.Background(), dayKey(c, e.clock.Now())).Int(); n != sent {
							t.Errorf("day counter %d after %d deliveries, want one each: a resent check charged it again", n, sent)
						}
					}
				})
			}
		})
	}
}

// dropProxy forwards connections to a Redis. Armed with a marker, it cuts
// the connection that sends a request containing the marker once Redis has
// answered it, so that the reply is lost, as many times as it was told.
type dropProxy struct {
	ln       net.Listener
	upstream string
	dropped  atomic.Int32

	mu     sync.Mutex
	marker []byte
	times  int32
}

func startDropProxy(t *testing.T, upstream string) *dropProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &dropProxy{ln: ln, upstream: upstream}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); p.serve(c) }()
		}
	}()
	return p
}

func (p *dropProxy) addr() string { return p.ln.Addr().String() }

func (p *dropProxy) arm(marker string, times int32) {
	p.mu.Lock()
	p.marker, p.times = []byte(marker), times
	p.mu.Unlock()
}

// take reports whether request bytes carry the armed marker, disarming it
// after the last time.
func (p *dropProxy) take(b []byte) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.times == 0 || !bytes.Contains(b, p.marker) {
		return false
	}
	p.times--
	return true
}

func (p *dropProxy) serve(c net.Conn) {
	defer c.Close()
	u, err := net.Dial("tcp", p.upstream)
	if err != nil {
		return
	}
	defer u.Close()
	cut := make(chan struct{}) // closed when the marked request went up
	replies := make(chan struct{})
	go func() {
		defer close(replies)
		buf := make([]byte, 64<<10)
		for {
			n, err := u.Read(buf)
			if n > 0 {
				select {
				case <-cut: // Redis answered the marked request: lose the answer
					p.dropped.Add(1)
					c.Close()
					return
				default:
				}
				if _, err := c.Write(buf[:n]); err != nil {
					return
				}
			}
			if err != nil {
				c.Close()
				return
			}
		}
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if p.take(buf[:n]) {
				close(cut)
			}
			if _, err := u.Write(buf[:n]); err != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	u.Close()
	<-replies
}

// A pipeline whose scripts Redis has lost (restarted, or wiped) has them
// loaded and runs again, even when an earlier command's reply is nil (a
// SET NX GET that took a free key): the nil must not hide the NOSCRIPT
// errors behind it, which failed every such delivery to the DLQ.
func TestScriptsReloadedBehindANilReply(t *testing.T) {
	for _, b := range redistest.Backends {
		t.Run(string(b), func(t *testing.T) {
			rdb := redisconn.Open(redisconn.Config{Addr: redistest.Start(t, b)})
			defer rdb.Close()
			ctx := context.Background()
			if err := rdb.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			var claim *redis.Cmd
			runs := 0
			if _, err := runPipeline(ctx, rdb, func(p redis.Pipeliner) {
				runs++
				p.SetArgs(ctx, "free", "inflight:a.1", redis.SetArgs{Mode: "NX", Get: true, TTL: time.Minute})
				claim = claimScript.EvalSha(ctx, p, []string{"leased", "", ""}, 60000, time.Now().UnixMicro(), 0, 0, 0, 0, "inflight:a.2")
			}); err != nil {
				t.Fatal(err)
			}
			if v, err := parseVerdict(claim); err != nil || v.outcome != "ok" {
				t.Errorf("claim after the scripts were lost: %+v, %v (pipeline run %d times); want ok", v, err, runs)
			}
		})
	}
}
