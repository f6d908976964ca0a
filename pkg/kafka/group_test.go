package kafka_test

import (
	"context"
	"flag"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/hookstream/hookstream/pkg/duration"
	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/kafka/kafkatest"
)

func defaultConfig() kafka.Config {
	var cfg kafka.Config
	cfg.RegisterFlags("kafka.", flag.NewFlagSet("t", flag.ContinueOnError))
	return cfg
}

func TestConfigValidateGroupSettings(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(c *kafka.Config)
		wantErr string // "" for valid
	}{
		{name: "defaults", edit: func(*kafka.Config) {}},
		{name: "session timeout at the brokers' minimum", edit: func(c *kafka.Config) {
			c.SessionTimeout = duration.Duration(6 * time.Second)
			c.HeartbeatInterval = duration.Duration(2 * time.Second)
		}},
		{
			name:    "session timeout below the brokers' minimum",
			edit:    func(c *kafka.Config) { c.SessionTimeout = duration.Duration(5 * time.Second) },
			wantErr: "kafka.session_timeout: must be between 6s and 30m",
		},
		{
			name:    "static session timeout above the brokers' maximum",
			edit:    func(c *kafka.Config) { c.StaticSessionTimeout = duration.Duration(time.Hour) },
			wantErr: "kafka.static_session_timeout: must be between 6s and 30m",
		},
		{
			name:    "heartbeat above a third of the session timeout",
			edit:    func(c *kafka.Config) { c.HeartbeatInterval = duration.Duration(4 * time.Second) },
			wantErr: "kafka.heartbeat_interval: must be at most a third of kafka.session_timeout (10s), got 4s",
		},
		{
			name:    "heartbeat zero",
			edit:    func(c *kafka.Config) { c.HeartbeatInterval = 0 },
			wantErr: "kafka.heartbeat_interval: must be at least 100ms",
		},
		{
			name:    "rebalance timeout zero",
			edit:    func(c *kafka.Config) { c.RebalanceTimeout = 0 },
			wantErr: "kafka.rebalance_timeout: must be between 1s and 30m",
		},
		{
			name:    "empty group prefix",
			edit:    func(c *kafka.Config) { c.GroupPrefix = "" },
			wantErr: "kafka.group_prefix: must not be empty",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := defaultConfig()
			tt.edit(&cfg)
			err := cfg.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestConfigDefaultsOfGroups(t *testing.T) {
	cfg := defaultConfig()
	if cfg.SessionTimeout.Std() != 10*time.Second || cfg.StaticSessionTimeout.Std() != 45*time.Second ||
		cfg.HeartbeatInterval.Std() != 3*time.Second || cfg.RebalanceTimeout.Std() != 60*time.Second {
		t.Fatalf("defaults: session %v, static %v, heartbeat %v, rebalance %v",
			cfg.SessionTimeout, cfg.StaticSessionTimeout, cfg.HeartbeatInterval, cfg.RebalanceTimeout)
	}
	// The default keeps the group ids that existing installations have
	// committed their offsets under.
	if got := cfg.Group("ingest"); got != "hookstream-ingest" {
		t.Fatalf("Group(ingest) = %q", got)
	}
	cfg.GroupPrefix = "staging.hookstream-"
	if got := cfg.Group("ingest"); got != "staging.hookstream-ingest" {
		t.Fatalf("Group(ingest) with a prefix = %q", got)
	}
}

// joins records the JoinGroup requests a kfake cluster receives, by group.
type joins struct {
	mu   sync.Mutex
	reqs map[string]*kmsg.JoinGroupRequest
}

func observeJoins(c *kfake.Cluster) *joins {
	j := &joins{reqs: map[string]*kmsg.JoinGroupRequest{}}
	c.ControlKey(int16(kmsg.JoinGroup), func(r kmsg.Request) (kmsg.Response, error, bool) {
		req := r.(*kmsg.JoinGroupRequest)
		j.mu.Lock()
		j.reqs[req.Group] = req
		j.mu.Unlock()
		return nil, nil, false // observe only; the control stays
	})
	return j
}

func (j *joins) wait(t *testing.T, group string) *kmsg.JoinGroupRequest {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		j.mu.Lock()
		req := j.reqs[group]
		j.mu.Unlock()
		if req != nil {
			return req
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no JoinGroup for group %s", group)
	return nil
}

func nopHandler(context.Context, []*kgo.Record) error { return nil }

// run runs cons until the test ends or stop is called; stop waits for Run to
// return and closes the consumer.
func run(t *testing.T, cons *kafka.Consumer) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cons.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
			cons.Close()
		})
	}
	t.Cleanup(stop)
	return stop
}

// The configured timeouts reach the group coordinator: a dynamic member
// joins with SessionTimeout, a static one (instance id) with
// StaticSessionTimeout, and a client that joins a group through NewClient's
// options (as the dispatcher does) with SessionTimeout too.
func TestJoinGroupCarriesConfiguredTimeouts(t *testing.T) {
	c := kafkatest.New(t)
	j := observeJoins(c.Kfake())
	cfg := c.Config()
	cfg.SessionTimeout = duration.Duration(7 * time.Second)
	cfg.StaticSessionTimeout = duration.Duration(50 * time.Second)
	cfg.HeartbeatInterval = duration.Duration(2 * time.Second)
	cfg.RebalanceTimeout = duration.Duration(20 * time.Second)
	ctx := context.Background()
	adminWithTopicIn(t, cfg)

	tests := []struct {
		name        string
		start       func(t *testing.T, group string)
		wantSession time.Duration
		wantStatic  bool
	}{
		{
			name: "dynamic consumer",
			start: func(t *testing.T, group string) {
				cons, err := kafka.NewConsumer(cfg, quiet(), "test", kafka.ConsumerConfig{Group: group, Topics: []string{"in"}}, nopHandler)
				if err != nil {
					t.Fatal(err)
				}
				run(t, cons)
			},
			wantSession: 7 * time.Second,
		},
		{
			name: "static consumer",
			start: func(t *testing.T, group string) {
				cons, err := kafka.NewConsumer(cfg, quiet(), "test", kafka.ConsumerConfig{Group: group, Topics: []string{"in"}, InstanceID: "pod-0"}, nopHandler)
				if err != nil {
					t.Fatal(err)
				}
				run(t, cons)
			},
			wantSession: 50 * time.Second,
			wantStatic:  true,
		},
		{
			name: "group client from NewClient",
			start: func(t *testing.T, group string) {
				cl, err := kafka.NewClient(cfg, quiet(), "test", kgo.ConsumerGroup(group), kgo.ConsumeTopics("in"))
				if err != nil {
					t.Fatal(err)
				}
				pctx, cancel := context.WithCancel(ctx)
				done := make(chan struct{})
				go func() { defer close(done); cl.PollFetches(pctx) }()
				t.Cleanup(func() { cancel(); <-done; cl.Close() })
			},
			wantSession: 7 * time.Second,
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			group := "g" + string(rune('a'+i))
			tt.start(t, group)
			req := j.wait(t, group)
			if got := time.Duration(req.SessionTimeoutMillis) * time.Millisecond; got != tt.wantSession {
				t.Errorf("JoinGroup session timeout = %v, want %v", got, tt.wantSession)
			}
			if got := time.Duration(req.RebalanceTimeoutMillis) * time.Millisecond; got != 20*time.Second {
				t.Errorf("JoinGroup rebalance timeout = %v, want 20s", got)
			}
			if static := req.InstanceID != nil; static != tt.wantStatic {
				t.Errorf("JoinGroup instance id = %v, want static %v", req.InstanceID, tt.wantStatic)
			}
		})
	}
}

// owner tracks which partitions a consumer owns, from its callbacks.
type owner struct {
	mu    sync.Mutex
	owned map[int32]bool
}

func (o *owner) assigned(_ context.Context, _ *kgo.Client, ps map[string][]int32) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, p := range ps["in"] {
		o.owned[p] = true
	}
}

func (o *owner) revoked(_ context.Context, _ *kgo.Client, ps map[string][]int32) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, p := range ps["in"] {
		delete(o.owned, p)
	}
}

func (o *owner) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.owned)
}

func newOwnedConsumer(t *testing.T, cfg kafka.Config, group, instanceID string) (*owner, *kafka.Consumer) {
	t.Helper()
	o := &owner{owned: map[int32]bool{}}
	cons, err := kafka.NewConsumer(cfg, quiet(), "test", kafka.ConsumerConfig{
		Group: group, Topics: []string{"in"}, InstanceID: instanceID,
		OnAssigned: o.assigned, OnRevoked: o.revoked,
	}, nopHandler)
	if err != nil {
		t.Fatal(err)
	}
	return o, cons
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("after %v: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// A graceful stop of a dynamic member sends LeaveGroup, so the group
// rebalances at once; a static member stops without leaving, and stays in
// the group (with its partitions) for its session timeout, waiting for its
// restart.
func TestCloseLeavesGroupOnlyWhenDynamic(t *testing.T) {
	c := kafkatest.New(t)
	cfg := c.Config()
	var mu sync.Mutex
	leaves := map[string]int{}
	c.Kfake().ControlKey(int16(kmsg.LeaveGroup), func(r kmsg.Request) (kmsg.Response, error, bool) {
		mu.Lock()
		leaves[r.(*kmsg.LeaveGroupRequest).Group]++
		mu.Unlock()
		return nil, nil, false
	})
	ctx := context.Background()
	admin := adminWithTopicIn(t, cfg)
	adm := kadm.NewClient(admin)

	for _, tt := range []struct {
		group, instanceID string
		wantLeave         bool
	}{
		{group: "dynamic", wantLeave: true},
		{group: "static", instanceID: "evaluator-0", wantLeave: false},
	} {
		t.Run(tt.group, func(t *testing.T) {
			o, cons := newOwnedConsumer(t, cfg, tt.group, tt.instanceID)
			stop := run(t, cons)
			waitFor(t, 20*time.Second, "partitions not assigned", func() bool { return o.count() == 3 })
			stop() // returns after the LeaveGroup response, if one is sent

			mu.Lock()
			n := leaves[tt.group]
			mu.Unlock()
			if got := n > 0; got != tt.wantLeave {
				t.Errorf("LeaveGroup requests = %d, want a leave: %v", n, tt.wantLeave)
			}
			described, err := adm.DescribeGroups(ctx, tt.group)
			if err != nil {
				t.Fatal(err)
			}
			members := len(described[tt.group].Members)
			if tt.wantLeave && members != 0 {
				t.Errorf("%d members after a dynamic member left, want 0", members)
			}
			if !tt.wantLeave && members != 1 {
				t.Errorf("%d members after a static member stopped, want it still there", members)
			}
		})
	}
}

// A dynamic member that dies without leaving the group (kill -9, a lost
// node) keeps its partitions until its session timeout passes; then the
// survivor gets them. With franz-go's default 45s this test would time out.
func TestDeadMemberPartitionsMoveAfterSessionTimeout(t *testing.T) {
	fake, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, "in"), kfake.GroupMinSessionTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	cfg := kafkatest.Config(fake.ListenAddrs()[0])
	cfg.SessionTimeout = duration.Duration(2 * time.Second)
	cfg.HeartbeatInterval = duration.Duration(500 * time.Millisecond)

	victim, victimCons := newOwnedConsumer(t, cfg, "g", "")
	stopVictim := run(t, victimCons)
	waitFor(t, 20*time.Second, "victim not assigned", func() bool { return victim.count() == 4 })
	survivor, survivorCons := newOwnedConsumer(t, cfg, "g", "")
	run(t, survivorCons)
	waitFor(t, 20*time.Second, "partitions not shared", func() bool {
		v, s := victim.count(), survivor.count()
		return v > 0 && s > 0 && v+s == 4
	})

	// The victim's LeaveGroup never reaches the coordinator: it answers
	// without processing it, as if the process had been killed.
	swallowed := make(chan struct{}, 1)
	fake.ControlKey(int16(kmsg.LeaveGroup), func(r kmsg.Request) (kmsg.Response, error, bool) {
		swallowed <- struct{}{}
		resp := r.ResponseKind().(*kmsg.LeaveGroupResponse)
		resp.Version = r.GetVersion()
		resp.ErrorCode = kerr.UnknownMemberID.Code
		return resp, nil, true
	})
	stopVictim()
	select {
	case <-swallowed:
	default:
		t.Fatal("the stopped member sent no LeaveGroup")
	}

	took := waitFor(t, 20*time.Second, "the survivor did not get the dead member's partitions", func() bool { return survivor.count() == 4 })
	t.Logf("partitions moved %v after the member died (session timeout %v)", took.Round(100*time.Millisecond), cfg.SessionTimeout)
}

// adminWithTopicIn returns a client of cfg's broker on which the topic "in"
// (three partitions) exists.
func adminWithTopicIn(t *testing.T, cfg kafka.Config) *kgo.Client {
	t.Helper()
	admin, err := kafka.NewClient(cfg, quiet(), "admin")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	if err := kafka.EnsureTopics(context.Background(), admin, -1, []kafka.TopicSpec{{Name: "in", Partitions: 3}}); err != nil {
		t.Fatal(err)
	}
	return admin
}
