package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/hookstream/hookstream/pkg/kafka/kafkatest"
	"github.com/hookstream/hookstream/pkg/redisconn/redistest"
)

// Two ingest replicas (two `hookstream serve ingest` processes, as the
// chart runs by default) on one broker: an apply through one is visible
// through the other's API within a second, and applies through both at
// the same moment leave both with the same view, in which no two versions
// of the campaign were told the same generation.
func TestTwoIngestReplicasShareTheCatalog(t *testing.T) {
	kc := kafkatest.New(t)
	redis := redistest.StartReal(t)
	a := startServeWith(t, "ingest", kc.Addr(), t.TempDir(), "", "-redis.addr="+redis)
	b := startServeWith(t, "ingest", kc.Addr(), t.TempDir(), "", "-redis.addr="+redis)

	replicaApply(t, a.http, replicaWebhook+"---\n"+replicaCampaign("MT50"))
	start := time.Now()
	for replicaPromo(t, b.http) != "MT50" {
		if time.Since(start) > time.Second {
			t.Fatalf("the apply through one replica is not visible through the other within 1s (it has %q)", replicaPromo(t, b.http))
		}
		time.Sleep(10 * time.Millisecond)
	}

	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		gens = map[int64]string{} // generation reported → promo code
	)
	for _, p := range []*serveProcess{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 8 {
				code := fmt.Sprintf("%s-%d", p.http, i)
				gen := replicaApply(t, p.http, replicaCampaign(code))
				mu.Lock()
				if other, ok := gens[gen]; ok {
					t.Errorf("applies of %s and %s were both given generation %d", other, code, gen)
				}
				gens[gen] = code
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	var va, vb []byte
	for deadline := time.Now().Add(5 * time.Second); ; {
		va, vb = replicaGet(t, a.http), replicaGet(t, b.http)
		if bytes.Equal(va, vb) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replicas disagree after concurrent applies:\n%s\n%s", va, vb)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var c struct {
		Metadata struct{ Generation int64 }
	}
	if err := json.Unmarshal(va, &c); err != nil {
		t.Fatal(err)
	}
	if c.Metadata.Generation < 17 {
		t.Errorf("generation %d after 17 different versions", c.Metadata.Generation)
	}
}

const replicaWebhook = `apiVersion: hookstream.dev/v1
kind: Webhook
metadata: {name: crm}
spec: {url: https://crm.example.com/hook}
`

func replicaCampaign(promo string) string {
	return fmt.Sprintf(`apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: race}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger: {type: single_action, action: {event: Charged}}
  what: {keyValues: {PromoCode: %q}}
`, promo)
}

// replicaApply posts manifests to a replica's API and returns the generation it
// reports for the campaign.
func replicaApply(t *testing.T, addr, docs string) int64 {
	t.Helper()
	resp, err := http.Post("http://"+addr+"/v1/apply", "application/yaml", bytes.NewBufferString(docs))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("apply through %s: %d %s", addr, resp.StatusCode, body)
	}
	var out struct {
		Results []struct {
			Kind       string
			Generation int64
		}
	}
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("apply answer %s: %v", body, err)
	}
	for _, r := range out.Results {
		if r.Kind == "Campaign" {
			return r.Generation
		}
	}
	t.Fatalf("apply answer without the campaign: %s", body)
	return 0
}

// replicaGet reads the campaign through a replica's API ("" body when missing).
func replicaGet(t *testing.T, addr string) []byte {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/v1/campaigns/race")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusNotFound {
		return nil
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("get through %s: %d %s", addr, resp.StatusCode, body)
	}
	return body
}

// replicaPromo is the campaign's PromoCode as a replica serves it.
func replicaPromo(t *testing.T, addr string) string {
	t.Helper()
	body := replicaGet(t, addr)
	if body == nil {
		return ""
	}
	var c struct {
		Spec struct {
			What struct{ KeyValues map[string]string }
		}
	}
	if err := json.Unmarshal(body, &c); err != nil {
		t.Fatalf("campaign %s: %v", body, err)
	}
	return c.Spec.What.KeyValues["PromoCode"]
}
