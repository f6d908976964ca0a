package dispatcher

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hookstream/hookstream/pkg/redisconn"
	"github.com/hookstream/hookstream/pkg/redisconn/redistest"
)

// The plain lease reads the same with one SET NX GET (Redis 7 on) as with
// a SET NX and a GET (older Redis): taken when the key was free; otherwise
// the value found (done: a duplicate; inflight: leased elsewhere).
func TestLeaseForms(t *testing.T) {
	for _, b := range redistest.Backends {
		t.Run(string(b), func(t *testing.T) {
			rdb := redisconn.Open(redisconn.Config{Addr: redistest.Start(t, b)})
			defer rdb.Close()
			ctx := context.Background()
			d := &Dispatcher{rdb: rdb}
			d.probeSetNXGet(ctx)
			if !d.setNXGet.Load() {
				t.Fatalf("%s does not take SET NX GET", b)
			}
			for _, form := range []string{"set-nx-get", "set-nx-and-get"} {
				t.Run(form, func(t *testing.T) {
					if err := rdb.Set(ctx, form+":done", doneValue, time.Minute).Err(); err != nil {
						t.Fatal(err)
					}
					if err := rdb.Set(ctx, form+":held", "inflight", time.Minute).Err(); err != nil {
						t.Fatal(err)
					}
					keys := []string{form + ":free", form + ":done", form + ":held"}
					items := make([]*item, len(keys))
					if _, err := runPipeline(ctx, rdb, func(p redis.Pipeliner) {
						for i, k := range keys {
							items[i] = &item{}
							if form == "set-nx-get" {
								items[i].setGet = p.SetArgs(ctx, k, "inflight", redis.SetArgs{Mode: "NX", Get: true, TTL: time.Minute})
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
					}{{true, ""}, {false, doneValue}, {false, "inflight"}}
					for i, it := range items {
						took, prev, err := it.leaseResult()
						if err != nil || took != want[i].took || prev != want[i].prev {
							t.Errorf("%s: took %v, found %q, err %v; want %v, %q", keys[i], took, prev, err, want[i].took, want[i].prev)
						}
					}
					if v, _ := rdb.Get(ctx, form+":free").Result(); v != "inflight" {
						t.Errorf("free key is %q after the lease, want inflight", v)
					}
					if v, _ := rdb.Get(ctx, form+":done").Result(); v != doneValue {
						t.Errorf("done key is %q after the lease, want it unchanged", v)
					}
				})
			}
		})
	}
}
