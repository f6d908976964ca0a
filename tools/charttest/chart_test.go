package charttest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

var update = flag.Bool("update", false, "rewrite the golden renders and the chart README's values table")

// ciValues returns charts/hookstream/ci/*-values.yaml by name ("default" for default-values.yaml).
func ciValues(t *testing.T) map[string]string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(ChartDir(), "ci", "*-values.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no charts/hookstream/ci/*-values.yaml (%v)", err)
	}
	out := map[string]string{}
	for _, f := range files {
		out[strings.TrimSuffix(filepath.Base(f), "-values.yaml")] = f
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

var (
	renderMu sync.Mutex
	renders  = map[string][]byte{}
)

// render renders a ci values file once per test binary.
func render(t *testing.T, file string) []byte {
	t.Helper()
	helm := Helm(t)
	renderMu.Lock()
	defer renderMu.Unlock()
	if out, ok := renders[file]; ok {
		return out
	}
	out, err := Template(helm, []string{file})
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	renders[file] = out
	return out
}

func decode(t *testing.T, file string) []Object {
	t.Helper()
	objs, err := Decode(render(t, file))
	if err != nil {
		t.Fatalf("rendered objects do not decode strictly into their Kubernetes types:\n%v", err)
	}
	return objs
}

func TestLint(t *testing.T) {
	helm := Helm(t)
	for _, name := range sortedKeys(ciValues(t)) {
		file := ciValues(t)[name]
		t.Run(name, func(t *testing.T) {
			if out, err := Run(helm, "lint", "--strict", ChartDir(), "--namespace", Namespace, "--values", file); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
		})
	}
}

// TestGolden compares each ci values file's render with testdata/golden/NAME.yaml; -update
// rewrites them. A difference is either a regression or a change to review and commit.
func TestGolden(t *testing.T) {
	for name, file := range ciValues(t) {
		t.Run(name, func(t *testing.T) {
			got := render(t, file)
			golden := filepath.Join("testdata", "golden", name+".yaml")
			if *update {
				if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./tools/charttest -run TestGolden -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("render of ci/%s-values.yaml differs from %s (review, then go test ./tools/charttest -run TestGolden -update):\n%s", name, golden, firstDiff(string(want), string(got)))
			}
		})
	}
	// A golden file without its values file is stale.
	stale, _ := filepath.Glob(filepath.Join("testdata", "golden", "*.yaml"))
	for _, g := range stale {
		if _, ok := ciValues(t)[strings.TrimSuffix(filepath.Base(g), ".yaml")]; !ok {
			t.Errorf("%s has no ci/*-values.yaml: delete it", g)
		}
	}
}

func firstDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return fmt.Sprintf("line %d:\n  golden: %q\n  render: %q", i+1, wl, gl)
		}
	}
	return "(no line differs)"
}

// The strings the chart and the binary agree on.
const (
	configFile = "/etc/hookstream/config.yaml"
	dataDir    = "/var/lib/hookstream"
)

// secretRef is what a secret field of the config file may hold: a ${NAME} reference.
var secretRef = regexp.MustCompile(`^\$\{([A-Za-z_][A-Za-z0-9_]*)(:-)?\}$`)

// configOf returns the config.yaml of the chart's ConfigMap, parsed, and its text.
func configOf(t *testing.T, objs []Object) (map[string]any, string, *corev1.ConfigMap) {
	t.Helper()
	for _, cm := range Find[*corev1.ConfigMap](objs) {
		if text, ok := cm.Data["config.yaml"]; ok {
			var cfg map[string]any
			if err := yaml.Unmarshal([]byte(text), &cfg); err != nil {
				t.Fatalf("ConfigMap %s: config.yaml: %v", cm.Name, err)
			}
			return cfg, text, cm
		}
	}
	t.Fatal("no ConfigMap with config.yaml")
	return nil, "", nil
}

func get(m map[string]any, path ...string) any {
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[p]
	}
	return cur
}

// TestObjects decodes every render strictly and checks what makes the chart work: probes,
// arguments per target, instance ids from the pod name, state volumes, the config's checksum,
// secrets only by reference, and a PodDisruptionBudget and a Service for every workload.
func TestObjects(t *testing.T) {
	for name, file := range ciValues(t) {
		t.Run(name, func(t *testing.T) {
			objs := decode(t, file)
			cfg, cfgText, cm := configOf(t, objs)
			workloads := Workloads(objs)
			if len(workloads) == 0 {
				t.Fatal("no Deployment or StatefulSet rendered")
			}

			t.Run("no secret values in ConfigMaps", func(t *testing.T) {
				for _, f := range [][]string{{"kafka", "sasl", "password"}, {"redis", "password"}, {"ingest", "tokens"}, {"ingest", "admin_tokens"}} {
					v := get(cfg, f...)
					vals, _ := v.([]any)
					if s, ok := v.(string); ok {
						vals = []any{s}
					}
					for _, x := range vals {
						if s, _ := x.(string); !secretRef.MatchString(s) {
							t.Errorf("config.yaml %s = %q: a secret field may only hold a ${NAME} reference", strings.Join(f, "."), x)
						}
					}
				}
				for _, c := range Find[*corev1.ConfigMap](objs) {
					for k, v := range c.Data {
						if strings.Contains(strings.ToLower(v), "begin") && strings.Contains(v, "PRIVATE KEY") {
							t.Errorf("ConfigMap %s key %s holds a private key", c.Name, k)
						}
					}
				}
			})

			for _, w := range workloads {
				t.Run(w.Kind+"/"+w.Name, func(t *testing.T) {
					checkWorkload(t, w, objs, cfg, cfgText, cm)
				})
			}

			t.Run("HorizontalPodAutoscalers", func(t *testing.T) {
				for _, h := range Find[*autoscalingv2.HorizontalPodAutoscaler](objs) {
					var target *appsv1.Deployment
					for _, d := range Find[*appsv1.Deployment](objs) {
						if d.Name == h.Spec.ScaleTargetRef.Name && h.Spec.ScaleTargetRef.Kind == "Deployment" {
							target = d
						}
					}
					if target == nil {
						t.Errorf("HPA %s scales %s/%s, which is not rendered", h.Name, h.Spec.ScaleTargetRef.Kind, h.Spec.ScaleTargetRef.Name)
						continue
					}
					if target.Spec.Replicas != nil {
						t.Errorf("Deployment %s sets replicas although HPA %s scales it (every upgrade would reset the scale)", target.Name, h.Name)
					}
					if len(h.Spec.Metrics) == 0 || h.Spec.MinReplicas == nil || *h.Spec.MinReplicas > h.Spec.MaxReplicas {
						t.Errorf("HPA %s: want metrics and minReplicas <= maxReplicas", h.Name)
					}
				}
			})

			t.Run("ServiceMonitor", func(t *testing.T) {
				services := Find[*corev1.Service](objs)
				for _, sm := range Find[*monitoringv1.ServiceMonitor](objs) {
					sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
					if err != nil {
						t.Fatal(err)
					}
					scraped := map[string]bool{}
					for _, s := range services {
						if sel.Matches(labels.Set(s.Labels)) {
							for _, p := range s.Spec.Ports {
								for _, e := range sm.Spec.Endpoints {
									if e.Port == p.Name && e.Path == "/metrics" {
										scraped[s.Spec.Selector["app.kubernetes.io/component"]] = true
									}
								}
							}
						}
					}
					for _, w := range workloads {
						if !scraped[w.Component] {
							t.Errorf("ServiceMonitor %s does not scrape /metrics of component %s", sm.Name, w.Component)
						}
					}
				}
			})

			t.Run("PrometheusRule", func(t *testing.T) {
				known := codeMetrics(t)
				for _, pr := range Find[*monitoringv1.PrometheusRule](objs) {
					for _, g := range pr.Spec.Groups {
						for _, r := range g.Rules {
							expr := r.Expr.String()
							if r.Alert == "" || strings.TrimSpace(expr) == "" {
								t.Errorf("rule %+v: want an alert name and an expression", r)
							}
							if strings.Count(expr, "(") != strings.Count(expr, ")") || strings.Count(expr, "{") != strings.Count(expr, "}") {
								t.Errorf("alert %s: unbalanced brackets in %q", r.Alert, expr)
							}
							for _, m := range metricRef.FindAllString(expr, -1) {
								base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_count"), "_sum")
								if !known[base] && !known[m] {
									t.Errorf("alert %s uses %s, which no instrument under pkg/ or services/ exports", r.Alert, m)
								}
							}
						}
					}
				}
			})
		})
	}
}

var metricRef = regexp.MustCompile(`\bhookstream_[a-z0-9_]+`)

var (
	metricsOnce sync.Once
	metricsSet  map[string]bool
)

// codeMetrics returns the names of the instruments created under pkg/ and services/
// (meter.Int64Counter("hookstream_...") and the like), so that alerts cannot name a metric
// that does not exist.
func codeMetrics(t *testing.T) map[string]bool {
	t.Helper()
	metricsOnce.Do(func() {
		metricsSet = map[string]bool{}
		decl := regexp.MustCompile(`\.(?:Int64|Float64)(?:Observable)?(?:Counter|UpDownCounter|Histogram|Gauge)\(\s*"(hookstream_[a-z0-9_]+)"`)
		for _, dir := range []string{"pkg", "services"} {
			_ = filepath.WalkDir(filepath.Join(Root(), dir), func(p string, d os.DirEntry, err error) error {
				if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
					return err
				}
				b, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				for _, m := range decl.FindAllSubmatch(b, -1) {
					metricsSet[string(m[1])] = true
				}
				return nil
			})
		}
	})
	if len(metricsSet) == 0 {
		t.Fatal("found no hookstream_* instruments under pkg/ and services/")
	}
	return metricsSet
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

func checkWorkload(t *testing.T, w Workload, objs []Object, cfg map[string]any, cfgText string, cm *corev1.ConfigMap) {
	pod := w.Template
	sel, err := metav1.LabelSelectorAsSelector(w.Selector)
	if err != nil || !sel.Matches(labels.Set(pod.Labels)) || sel.Empty() {
		t.Fatalf("selector %v does not select the pod template's labels %v", w.Selector, pod.Labels)
	}
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]

	// Probes: readiness on /readyz, liveness on /healthz, on the declared http port.
	if len(c.Ports) != 1 || c.Ports[0].Name != "http" || c.Ports[0].ContainerPort != 8080 {
		t.Errorf("container ports %+v: want http 8080 (API, probes and /metrics)", c.Ports)
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"readiness", c.ReadinessProbe, "/readyz"}, {"liveness", c.LivenessProbe, "/healthz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s probe: missing or not HTTP", p.name)
			continue
		}
		if p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port.String() != "http" {
			t.Errorf("%s probe: GET %s on %s, want %s on http", p.name, p.probe.HTTPGet.Path, p.probe.HTTPGet.Port.String(), p.path)
		}
	}
	if c.StartupProbe != nil {
		t.Errorf("startup probe: a liveness on /healthz already tolerates long restores")
	}

	// Arguments per target.
	if len(c.Args) < 3 || c.Args[0] != "serve" || c.Args[1] != w.Component || !slices.Contains(c.Args, "-config.file="+configFile) {
		t.Errorf("args %q: want serve %s -config.file=%s ...", c.Args, w.Component, configFile)
	}
	if len(c.Command) != 0 {
		t.Errorf("command %q: the image's entrypoint is the binary; give args only", c.Command)
	}

	// $(VAR) in args expands only for variables declared before; the instance id comes from the pod name.
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	for _, a := range c.Args {
		for _, m := range varRef.FindAllStringSubmatch(a, -1) {
			if _, ok := env[m[1]]; !ok {
				t.Errorf("arg %q references $(%s), which the container does not declare", a, m[1])
			}
		}
	}
	wantIDs := map[string][]string{"evaluator": {"evaluator"}, "timer": {"timer"}, "all": {"evaluator", "timer"}}[w.Component]
	for _, svc := range []string{"evaluator", "timer"} {
		arg := "-" + svc + ".instance-id=$(POD_NAME)"
		if has := slices.Contains(c.Args, arg); has != slices.Contains(wantIDs, svc) {
			t.Errorf("args %q: %s present = %v, want %v", c.Args, arg, has, !has)
		}
	}
	if len(wantIDs) > 0 {
		if e, ok := env["POD_NAME"]; !ok || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "metadata.name" {
			t.Errorf("POD_NAME must come from the downward API (metadata.name), got %+v", e)
		}
		if w.Kind != "StatefulSet" {
			t.Errorf("%s keeps state and a stable identity: want a StatefulSet, got %s", w.Component, w.Kind)
		}
	} else if w.Kind != "Deployment" {
		t.Errorf("%s is stateless: want a Deployment, got %s", w.Component, w.Kind)
	}

	// Secrets reach the config file only through variables set from Secrets.
	for _, m := range regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}`).FindAllStringSubmatch(cfgText, -1) {
		name, hasDefault := m[1], m[2] != ""
		e, ok := env[name]
		if !ok && !hasDefault {
			t.Errorf("config.yaml references ${%s} without a default, and the container does not set it: the process would refuse to start", name)
		}
		if ok && (e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil) {
			t.Errorf("env %s, referenced by config.yaml, must come from a Secret (secretKeyRef)", name)
		}
		if ok && e.Value != "" {
			t.Errorf("env %s carries a literal value", name)
		}
	}
	if get(cfg, "ingest", "tokens") != nil && (w.Component == "ingest" || w.Component == "all") {
		for _, name := range []string{"HOOKSTREAM_INGEST_TOKENS", "HOOKSTREAM_ADMIN_TOKENS"} {
			if e, ok := env[name]; !ok || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || (e.ValueFrom.SecretKeyRef.Optional != nil && *e.ValueFrom.SecretKeyRef.Optional) {
				t.Errorf("the API pods need %s from a required Secret key, got %+v", name, e)
			}
		}
	}

	// The config file: mounted from the chart's ConfigMap, its checksum on the pod.
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		volumes[v.Name] = v
	}
	claims := map[string]corev1.PersistentVolumeClaim{}
	for _, pvc := range w.Claims {
		claims[pvc.Name] = pvc
	}
	for _, m := range c.VolumeMounts {
		_, isVol := volumes[m.Name]
		_, isClaim := claims[m.Name]
		if !isVol && !isClaim {
			t.Errorf("volume mount %s has no volume or claim template", m.Name)
		}
	}
	if v, ok := volumes["config"]; !ok || v.ConfigMap == nil || v.ConfigMap.Name != cm.Name || mounts["config"].MountPath != filepath.Dir(configFile) {
		t.Errorf("want ConfigMap %s mounted at %s", cm.Name, filepath.Dir(configFile))
	}
	sum := sha256.Sum256([]byte(strings.TrimSuffix(cfgText, "\n")))
	if got := pod.Annotations["checksum/config"]; got != hex.EncodeToString(sum[:]) {
		t.Errorf("pod annotation checksum/config = %q, want the SHA-256 of config.yaml %s", got, hex.EncodeToString(sum[:]))
	}

	// Security: non-root, read-only root filesystem, a writable /tmp.
	sc, psc := c.SecurityContext, pod.Spec.SecurityContext
	nonRoot := (sc != nil && sc.RunAsNonRoot != nil && *sc.RunAsNonRoot) || (psc != nil && psc.RunAsNonRoot != nil && *psc.RunAsNonRoot)
	if !nonRoot || sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("want runAsNonRoot, readOnlyRootFilesystem and no privilege escalation, got %+v / %+v", sc, psc)
	}
	if mounts["tmp"].MountPath != "/tmp" {
		t.Errorf("want an emptyDir on /tmp (the root filesystem is read-only)")
	}
	if g := pod.Spec.TerminationGracePeriodSeconds; g == nil || *g < 30 {
		t.Errorf("terminationGracePeriodSeconds %v: want at least 30s to drain", g)
	}

	// State: the evaluator's and timer's Pebble on the data volume.
	if len(wantIDs) > 0 {
		m, ok := mounts["data"]
		if !ok || m.MountPath != dataDir {
			t.Errorf("want the data volume mounted at %s, got %+v", dataDir, m)
		}
		for _, svc := range wantIDs {
			if d, _ := get(cfg, svc, "data_dir").(string); !strings.HasPrefix(d, dataDir+"/") {
				t.Errorf("config %s.data_dir = %q, want it on the data volume %s", svc, d, dataDir)
			}
		}
		if pvc, ok := claims["data"]; ok {
			if _, ok := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; !ok || len(pvc.Spec.AccessModes) == 0 {
				t.Errorf("claim template data: want a storage request and access modes, got %+v", pvc.Spec)
			}
		} else if v, ok := volumes["data"]; !ok || v.EmptyDir == nil {
			t.Errorf("want a volumeClaimTemplate named data (or, without persistence, an emptyDir)")
		}
	} else if _, ok := mounts["data"]; ok {
		t.Errorf("%s keeps no state: no data volume expected", w.Component)
	}

	// Every workload has a PodDisruptionBudget and a Service for its pods.
	var pdbs, svcs int
	for _, p := range Find[*policyv1.PodDisruptionBudget](objs) {
		if s, err := metav1.LabelSelectorAsSelector(p.Spec.Selector); err == nil && !s.Empty() && s.Matches(labels.Set(pod.Labels)) {
			pdbs++
			if p.Spec.MaxUnavailable == nil && p.Spec.MinAvailable == nil {
				t.Errorf("PDB %s sets neither maxUnavailable nor minAvailable", p.Name)
			}
		}
	}
	for _, s := range Find[*corev1.Service](objs) {
		if len(s.Spec.Selector) > 0 && labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(pod.Labels)) {
			svcs++
			if len(s.Spec.Ports) == 0 || s.Spec.Ports[0].TargetPort.String() != "http" {
				t.Errorf("Service %s: want a port to http", s.Name)
			}
		}
	}
	if pdbs != 1 {
		t.Errorf("want one PodDisruptionBudget selecting the pods, got %d", pdbs)
	}
	if svcs != 1 {
		t.Errorf("want one Service selecting the pods, got %d", svcs)
	}
	if w.Kind == "StatefulSet" {
		var ss *appsv1.StatefulSet
		for _, s := range Find[*appsv1.StatefulSet](objs) {
			if s.Name == w.Name {
				ss = s
			}
		}
		found := false
		for _, s := range Find[*corev1.Service](objs) {
			found = found || s.Name == ss.Spec.ServiceName
		}
		if !found {
			t.Errorf("StatefulSet %s: serviceName %q is not rendered", ss.Name, ss.Spec.ServiceName)
		}
	}
}

// TestRefused renders each testdata/refused/*.yaml, which must fail with the text of its
// `# want:` line: values that break values.schema.json (helm validates them itself) and
// values that the templates refuse (no API tokens, a secret in structuredConfig...).
func TestRefused(t *testing.T) {
	helm := Helm(t)
	files, _ := filepath.Glob(filepath.Join("testdata", "refused", "*.yaml"))
	if len(files) == 0 {
		t.Fatal("no testdata/refused/*.yaml")
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".yaml"), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var wants []string
			for _, line := range strings.Split(string(data), "\n") {
				if w, ok := strings.CutPrefix(line, "# want: "); ok {
					wants = append(wants, w)
				}
			}
			if len(wants) == 0 {
				t.Fatalf("%s has no `# want: ` line", f)
			}
			out, err := Template(helm, []string{f})
			if err == nil {
				t.Fatalf("rendered, want an error with %q; got:\n%.600s", wants, out)
			}
			for _, w := range wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
		})
	}
}
