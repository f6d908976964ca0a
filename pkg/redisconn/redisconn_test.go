package redisconn_test

import (
	"context"
	"testing"
	"time"

	"github.com/hookstream/hookstream/pkg/redisconn"
	"github.com/hookstream/hookstream/pkg/redisconn/redistest"
)

// Dedupe keys and caps rely on TTLs: on both backends a key must expire on
// the wall clock (miniredis only does so because the embedded Redis drives
// its clock).
func TestKeysExpireOnTheWallClock(t *testing.T) {
	for _, b := range redistest.Backends {
		t.Run(string(b), func(t *testing.T) {
			addr := redistest.Start(t, b)
			c := redisconn.Open(redisconn.Config{Addr: addr})
			defer c.Close()
			ctx := context.Background()
			ok, err := c.SetNX(ctx, "dedupe:t1", "1", time.Second).Result()
			if err != nil || !ok {
				t.Fatalf("first SETNX = %v, %v", ok, err)
			}
			if ok, _ := c.SetNX(ctx, "dedupe:t1", "1", time.Second).Result(); ok {
				t.Fatal("second SETNX succeeded before expiry")
			}
			deadline := time.Now().Add(5 * time.Second)
			for {
				n, err := c.Exists(ctx, "dedupe:t1").Result()
				if err != nil {
					t.Fatal(err)
				}
				if n == 0 {
					return
				}
				if time.Now().After(deadline) {
					t.Fatal("key with a 1s TTL still exists after 5s")
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
}
