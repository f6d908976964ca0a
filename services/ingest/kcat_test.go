package ingest

import (
	"bytes"
	"os/exec"
	"testing"
	"time"

	"github.com/hookstream/hookstream/pkg/kafka/kafkatest"
)

// TestKcatMixNothingLost is the must-show: 10,000 mixed records in
// the three formats, valid and invalid with every error kind, produced by
// kcat (librdkafka, an independent client) to the raw topic. Every valid
// record must be on the events topic keyed by its identity, every invalid one
// in the DLQ with its reason and original bytes, none in both, none missing.
func TestKcatMixNothingLost(t *testing.T) {
	kcat := kafkatest.RequireKcat(t)
	e := newEnv(t)
	mix := genMix(10_000)

	// kcat splits stdin into messages at 0x1e and each message into key and
	// value at 0x1f (no 0x1f: no key); the generator uses neither byte, so
	// values may hold newlines, tabs, NUL and invalid UTF-8.
	var stdin bytes.Buffer
	for _, r := range mix {
		if r.key != nil {
			stdin.Write(r.key)
			stdin.WriteByte(0x1f)
		}
		stdin.Write(r.value)
		stdin.WriteByte(0x1e)
	}

	e.start(defaultConfig()) // consumes while kcat produces
	start := time.Now()
	cmd := exec.Command(kcat, "-P", "-q", "-b", e.kc.Addr(), "-t", e.topics.EventsRaw,
		"-D", `\x1e`, "-K", `\x1f`, "-H", "traceparent="+traceparent, "-X", "linger.ms=5")
	cmd.Stdin = &stdin
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kcat: %v\n%s", err, out)
	}
	t.Logf("kcat produced %d records in %v", len(mix), time.Since(start).Round(time.Millisecond))

	m := identifyRaw(t, mix, e.reader(e.topics.EventsRaw).readNew())

	e.waitCaughtUp(60 * time.Second)
	t.Logf("ingest caught up %v after kcat started", time.Since(start).Round(time.Millisecond))
	events := e.reader(e.topics.Events).readNew()
	dlq := e.reader(e.topics.EventsDLQ).readNew()

	seen, formats, codes := m.outputs(events, dlq, traceparent)
	m.complete(seen, false, func(int) bool { return true })
	m.done()
	outcomes := 0
	for _, r := range mix {
		outcomes += len(r.outs)
		for _, o := range r.outs {
			if !o.valid() && codes[o.code] == 0 {
				t.Errorf("no dead letter with code %s", o.code)
				codes[o.code] = -1
			}
		}
	}
	for _, f := range []string{"native", "segment", "clevertap"} {
		if formats[f] == 0 {
			t.Errorf("no %s event on the events topic", f)
		}
	}
	if len(events)+len(dlq) != outcomes {
		t.Errorf("%d events + %d dead letters for %d outcomes", len(events), len(dlq), outcomes)
	}
	t.Logf("%d raw records (%d outcomes) → %d events %v, %d dead letters %v",
		len(mix), outcomes, len(events), formats, len(dlq), codes)
}
