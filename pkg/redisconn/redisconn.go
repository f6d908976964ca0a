// Package redisconn connects to Redis (dedupe keys, caps, throttles,
// counters) or, for `hookstream dev`, runs an in-process Redis.
package redisconn

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/hookstream/hookstream/pkg/service"
)

// Config says where Redis is.
type Config struct {
	// Addr is host:port. Empty in `hookstream dev` starts an embedded Redis.
	Addr     string `yaml:"addr"`
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	DB       int    `yaml:"db"`
}

// RegisterFlags registers the flags under prefix (e.g. "redis.").
func (c *Config) RegisterFlags(prefix string, fs *flag.FlagSet) {
	fs.StringVar(&c.Addr, prefix+"addr", "127.0.0.1:6379", "Redis host:port.")
	fs.StringVar(&c.Username, prefix+"username", "", "Redis ACL user name.")
	fs.StringVar(&c.Password, prefix+"password", "", "Redis password (use ${ENV} in the YAML file).")
	fs.IntVar(&c.DB, prefix+"db", 0, "Redis database number.")
}

// Validate reports configuration that cannot work.
func (c *Config) Validate() error {
	if c.Addr == "" {
		return fmt.Errorf("redis.addr: is required")
	}
	return nil
}

// Open returns a client for cfg. It does not dial. Commands run within a
// trace make spans (see traceHook).
func Open(cfg Config) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: cfg.Addr, Username: cfg.Username, Password: cfg.Password, DB: cfg.DB})
	c.AddHook(newTraceHook())
	return c
}

// Embedded is an in-process Redis whose key expiry follows the wall clock
// (miniredis only expires keys when its clock is advanced).
type Embedded struct {
	m    *miniredis.Miniredis
	stop chan struct{}
	wg   sync.WaitGroup
}

// StartEmbedded starts an in-process Redis on a free loopback port.
func StartEmbedded() (*Embedded, error) {
	m := miniredis.NewMiniRedis()
	if err := m.StartAddr("127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("embedded redis: %w", err)
	}
	e := &Embedded{m: m, stop: make(chan struct{})}
	e.wg.Add(1)
	go e.tick()
	return e, nil
}

// Expiry granularity of the embedded Redis: keys expire at most
// minExpiryTick late, and later (up to maxExpiryTick) when there are so
// many keys that expiring them (miniredis goes through every key, sorted)
// would take more than 1/expiryShare of a core. A `hookstream dev` that
// has handled a few hundred thousand triggers holds as many dedupe keys
// (kept for days); going through them every 250ms took half a core.
const (
	minExpiryTick = 250 * time.Millisecond
	maxExpiryTick = 5 * time.Second
	expiryShare   = 50
)

func (e *Embedded) tick() {
	defer e.wg.Done()
	t := time.NewTimer(minExpiryTick)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-e.stop:
			return
		case now := <-t.C:
			e.m.SetTime(now)
			e.m.FastForward(now.Sub(last))
			last = now
			t.Reset(min(max(expiryShare*time.Since(now), minExpiryTick), maxExpiryTick))
		}
	}
}

// Addr is the embedded Redis's host:port.
func (e *Embedded) Addr() string { return e.m.Addr() }

// Close stops it.
func (e *Embedded) Close() {
	close(e.stop)
	e.wg.Wait()
	e.m.Close()
}

// NewEmbeddedService runs an embedded Redis as a service; onStart receives
// its address before dependent services start.
func NewEmbeddedService(log *slog.Logger, onStart func(addr string)) *service.Service {
	var e *Embedded
	return service.New("redis-embedded",
		func(context.Context) error {
			var err error
			if e, err = StartEmbedded(); err != nil {
				return err
			}
			log.Info("embedded redis started", "component", "redis-embedded", "addr", e.Addr())
			onStart(e.Addr())
			return nil
		}, nil,
		func(error) error {
			if e != nil {
				e.Close()
			}
			return nil
		})
}
