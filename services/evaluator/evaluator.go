package evaluator

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/protobuf/proto"

	"github.com/hookstream/hookstream/pkg/catalog"
	"github.com/hookstream/hookstream/pkg/condition"
	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/manifest"
	"github.com/hookstream/hookstream/pkg/service"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

// Evaluator consumes {prefix}events and produces {prefix}triggers.
type Evaluator struct {
	cfg    Config
	kcfg   kafka.Config
	topics kafka.Topics
	log    *slog.Logger
	cat    *catalog.Catalog
	store  *store
	cons   *kafka.Consumer

	events, triggers, skipped metric.Int64Counter
}

// New returns an evaluator. cat must be kept current by a catalog follower.
func New(cfg Config, kcfg kafka.Config, log *slog.Logger, cat *catalog.Catalog, meter metric.Meter) (*Evaluator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	e := &Evaluator{cfg: cfg, kcfg: kcfg, topics: kcfg.Topics(), log: log.With("component", "evaluator"), cat: cat}
	var err error
	if e.events, err = meter.Int64Counter("hookstream_evaluator_records_total", metric.WithDescription("Records of the events topic evaluated, by kind.")); err != nil {
		return nil, err
	}
	if e.triggers, err = meter.Int64Counter("hookstream_triggers_total", metric.WithDescription("Triggers emitted, by campaign, trigger type and control.")); err != nil {
		return nil, err
	}
	if e.skipped, err = meter.Int64Counter("hookstream_evaluator_skipped_total", metric.WithDescription("Records or decisions skipped, by reason.")); err != nil {
		return nil, err
	}
	return e, nil
}

// Service returns the evaluator's lifecycle.
func (e *Evaluator) Service() *service.Service {
	return service.New("evaluator",
		func(ctx context.Context) error {
			var err error
			if e.store, err = openStore(e.cfg.DataDir); err != nil {
				return err
			}
			e.cons, err = kafka.NewConsumer(e.kcfg, e.log, "evaluator", kafka.ConsumerConfig{
				Group: "hookstream-evaluator", Topics: []string{e.topics.Events}, InstanceID: e.cfg.InstanceID,
			}, e.handle)
			return err
		},
		func(ctx context.Context) error { return e.cons.Run(ctx) },
		func(error) error {
			if e.cons != nil {
				e.cons.Close()
			}
			if e.store != nil {
				return e.store.close()
			}
			return nil
		})
}

// handle evaluates a batch: state changes go into one Pebble batch that is
// committed (synced) after the triggers are acknowledged and before the
// offsets are committed. Re-processing after a crash yields the same trigger
// ids, which the dispatcher deduplicates.
func (e *Evaluator) handle(ctx context.Context, recs []*kgo.Record) error {
	b := e.store.db.NewIndexedBatch()
	defer b.Close()
	var out []*kgo.Record
	for _, r := range recs {
		var ev hookstreamv1.Event
		if err := proto.Unmarshal(r.Value, &ev); err != nil {
			e.skipped.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", "undecodable")))
			e.log.Error("skipping undecodable event", "partition", r.Partition, "offset", r.Offset, "err", err)
			continue
		}
		e.events.Add(ctx, 1, metric.WithAttributes(attribute.String("kind", ev.Kind.String())))
		trs, err := e.evaluate(ctx, b, &ev)
		if err != nil {
			return fmt.Errorf("evaluate offset %d: %w", r.Offset, err)
		}
		for _, t := range trs {
			v, err := proto.Marshal(t)
			if err != nil {
				return err
			}
			out = append(out, &kgo.Record{Topic: e.topics.Triggers, Key: []byte(t.Identity), Value: v, Headers: r.Headers})
		}
	}
	if err := kafka.ProduceSync(ctx, e.cons.Client(), out...); err != nil {
		return err
	}
	return b.Commit(pebble.Sync)
}

// evaluate applies one event to the state and returns the triggers it causes.
func (e *Evaluator) evaluate(ctx context.Context, b *pebble.Batch, ev *hookstreamv1.Event) ([]*hookstreamv1.Trigger, error) {
	prof, err := profile(b, ev.Identity)
	if err != nil {
		return nil, err
	}
	switch ev.Kind {
	case hookstreamv1.Event_KIND_PROFILE:
		props, err := decode(ev.PropertiesJson)
		if err != nil {
			e.skipped.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", "bad_properties")))
			return nil, nil
		}
		for k, v := range props {
			if v == nil {
				delete(prof, k)
				continue
			}
			if _, ok := prof[k]; !ok && len(prof) >= e.cfg.MaxProfileProperties {
				e.skipped.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", "profile_full")))
				e.log.Warn("profile property bound reached; property dropped", "max", e.cfg.MaxProfileProperties)
				continue
			}
			prof[k] = v
		}
		return nil, putProfile(b, ev.Identity, prof)
	case hookstreamv1.Event_KIND_EVENT:
		return e.onEvent(ctx, ev, prof)
	default:
		e.skipped.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", "unhandled_kind")))
		return nil, nil
	}
}

func (e *Evaluator) onEvent(ctx context.Context, ev *hookstreamv1.Event, prof map[string]any) ([]*hookstreamv1.Trigger, error) {
	props, err := decode(ev.PropertiesJson)
	if err != nil {
		return nil, nil
	}
	at := time.UnixMilli(ev.TsMs)
	var out []*hookstreamv1.Trigger
	for _, c := range e.cat.Campaigns() {
		s := &c.Spec
		if s.State == manifest.StatePaused || s.Delivery.Type != manifest.DeliveryTriggered || s.Trigger == nil || !inWindow(s.Active, at) {
			continue
		}
		t := s.Trigger
		var fires bool
		switch t.Type {
		case manifest.TriggerSingleAction, manifest.TriggerActionsWithUserProperties:
			fires = t.Action != nil && t.Action.Event == ev.Name && e.match(ctx, c, t.Action.Where, condition.Env{Props: props, Profile: prof, Now: at})
			if fires && t.Type == manifest.TriggerActionsWithUserProperties {
				fires = e.match(ctx, c, t.Profile, condition.Env{Props: prof, Profile: prof, Now: at})
			}
		default:
			// The other trigger types need per-user history and timers.
			continue
		}
		if !fires || !e.inAudience(ctx, c, prof, at) {
			continue
		}
		tr := &hookstreamv1.Trigger{
			Id:                       TriggerID(c.Metadata.Name, ev.Id),
			Campaign:                 c.Metadata.Name,
			CampaignGeneration:       c.Metadata.Generation,
			TriggerType:              t.Type,
			Identity:                 ev.Identity,
			TsMs:                     ev.TsMs,
			CauseEventId:             ev.Id,
			CauseEventName:           ev.Name,
			CauseEventTsMs:           ev.TsMs,
			CauseEventPropertiesJson: ev.PropertiesJson,
			Control:                  InControlGroup(c, ev.Identity),
		}
		if tr.ProfileJson, err = json.Marshal(prof); err != nil {
			return nil, err
		}
		e.triggers.Add(ctx, 1, metric.WithAttributes(attribute.String("campaign", c.Metadata.Name), attribute.String("trigger_type", t.Type), attribute.Bool("control", tr.Control)))
		out = append(out, tr)
	}
	return out, nil
}

func (e *Evaluator) match(ctx context.Context, c *manifest.Campaign, cs []manifest.Condition, env condition.Env) bool {
	ok, err := condition.MatchAll(cs, env)
	if err != nil {
		e.skipped.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", "condition_error"), attribute.String("campaign", c.Metadata.Name)))
		if !errors.Is(err, condition.ErrNoHistory) {
			e.log.Warn("condition failed", "campaign", c.Metadata.Name, "err", err)
		}
		return false
	}
	return ok
}

// inAudience applies who: the segment and where, over the profile.
func (e *Evaluator) inAudience(ctx context.Context, c *manifest.Campaign, prof map[string]any, at time.Time) bool {
	who := c.Spec.Who
	if who == nil {
		return true
	}
	env := condition.Env{Props: prof, Profile: prof, Now: at}
	if who.Segment != "" {
		seg, ok := e.cat.Segment(who.Segment)
		if !ok {
			e.skipped.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", "missing_segment"), attribute.String("campaign", c.Metadata.Name)))
			return false
		}
		if !e.match(ctx, c, []manifest.Condition{seg.Spec}, env) {
			return false
		}
	}
	if who.Where != nil && !e.match(ctx, c, []manifest.Condition{*who.Where}, env) {
		return false
	}
	return true
}

func inWindow(w *manifest.ActiveWindow, at time.Time) bool {
	if w == nil {
		return true
	}
	if w.From != nil && at.Before(*w.From) {
		return false
	}
	if w.Until != nil && !at.Before(*w.Until) {
		return false
	}
	return true
}

func decode(b []byte) (map[string]any, error) {
	m := map[string]any{}
	if len(b) == 0 {
		return m, nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	return m, dec.Decode(&m)
}

// TriggerID is the deterministic id of the trigger that cause caused for
// campaign: re-evaluating the same input yields the same id, which the
// dispatcher deduplicates on and the receiver sees as webhook-id.
func TriggerID(campaign, cause string) string {
	h := sha256.Sum256([]byte(campaign + "\x00" + cause))
	return "msg_" + hex.EncodeToString(h[:16])
}

// InControlGroup assigns a user to a campaign's control group by a
// deterministic hash of (campaign, user) against controlGroup.percent.
func InControlGroup(c *manifest.Campaign, identity string) bool {
	if c.Spec.ControlGroup == nil || c.Spec.ControlGroup.Percent <= 0 {
		return false
	}
	h := sha256.Sum256([]byte(c.Metadata.Name + "\x00" + identity))
	bucket := float64(binary.BigEndian.Uint64(h[:8])%10000) / 100 // 0.00 .. 99.99
	return bucket < c.Spec.ControlGroup.Percent
}
