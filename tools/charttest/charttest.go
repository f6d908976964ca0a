// Package charttest tests charts/hookstream and docker-compose.yml the way chart repositories
// are tested, with no cluster and no network: helm lint, golden renders of
// charts/hookstream/ci/*-values.yaml, strict decoding of every rendered object into its
// Kubernetes type (unknown fields refused), assertions on the rendered objects, schema
// validation by helm itself, the documentation of every value, and `docker-compose config`.
//
// The external tools are found, never downloaded, at test time: helm from $HELM, ./bin/helm
// (where `make chart-tools` installs it) or $PATH; docker-compose from $DOCKER_COMPOSE, $PATH,
// or the `docker compose` plugin. A missing tool skips its tests with a loud SKIP line, except
// under CI=true, where it fails them.
package charttest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// Root is the repository's root directory, found from this file's location so that the tests
// work from any working directory.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// ChartDir is charts/hookstream.
func ChartDir() string { return filepath.Join(Root(), "charts", "hookstream") }

// HelmVersion is the helm that `make chart-tools` installs.
const HelmVersion = "v3.22.0"

var (
	helmOnce sync.Once
	helmPath string
	helmErr  error

	composeOnce sync.Once
	composeCmd  []string
	composeErr  error
)

// Helm returns the helm binary, or skips (fails under CI=true) when there is none.
func Helm(t testing.TB) string {
	t.Helper()
	helmOnce.Do(func() { helmPath, helmErr = findHelm() })
	if helmErr != nil {
		missing(t, "helm", helmErr.Error()+"; install it with `make chart-tools` (go install helm.sh/helm/v3/cmd/helm@"+HelmVersion+" into ./bin, about 2 minutes the first time)")
	}
	return helmPath
}

func findHelm() (string, error) {
	var candidates []string
	if p := os.Getenv("HELM"); p != "" {
		candidates = append(candidates, p)
	}
	candidates = append(candidates, filepath.Join(Root(), "bin", "helm"))
	if p, err := exec.LookPath("helm"); err == nil {
		candidates = append(candidates, p)
	}
	var tried []string
	for _, c := range candidates {
		if _, err := os.Stat(c); err != nil {
			continue
		}
		out, err := exec.Command(c, "version", "--short").Output()
		if err != nil {
			tried = append(tried, c)
			continue
		}
		if !strings.HasPrefix(strings.TrimSpace(string(out)), "v3.") {
			tried = append(tried, fmt.Sprintf("%s (%s, want v3)", c, strings.TrimSpace(string(out))))
			continue
		}
		return c, nil
	}
	msg := "no helm v3 in $HELM, ./bin/helm or $PATH"
	if len(tried) > 0 {
		msg += " (unusable: " + strings.Join(tried, ", ") + ")"
	}
	return "", errors.New(msg)
}

// Compose returns the command that runs docker-compose (`docker-compose` or `docker compose`),
// or skips (fails under CI=true) when there is none.
func Compose(t testing.TB) []string {
	t.Helper()
	composeOnce.Do(func() { composeCmd, composeErr = findCompose() })
	if composeErr != nil {
		missing(t, "docker-compose", composeErr.Error()+"; install it with `apt-get install --no-install-recommends docker-compose` (make tools does, as root)")
	}
	return composeCmd
}

func findCompose() ([]string, error) {
	var candidates [][]string
	if p := os.Getenv("DOCKER_COMPOSE"); p != "" {
		candidates = append(candidates, strings.Fields(p))
	}
	if p, err := exec.LookPath("docker-compose"); err == nil {
		candidates = append(candidates, []string{p})
	}
	if p, err := exec.LookPath("docker"); err == nil {
		candidates = append(candidates, []string{p, "compose"})
	}
	for _, c := range candidates {
		if err := exec.Command(c[0], append(c[1:], "version")...).Run(); err == nil {
			return c, nil
		}
	}
	return nil, errors.New("neither docker-compose nor the docker compose plugin was found")
}

var announced sync.Map

// missing fails under CI=true and otherwise skips, saying so on stderr once per tool so that
// the skip is seen without -v.
func missing(t testing.TB, tool, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("FAIL: CI=true and %s is missing: %s", tool, why)
	}
	if _, loaded := announced.LoadOrStore(tool, true); !loaded {
		fmt.Fprintf(os.Stderr, "\n*** SKIP: %s is missing, so the tests that need it are skipped: %s ***\n\n", tool, why)
	}
	t.Skipf("SKIP: %s is missing: %s", tool, why)
}

// Run runs a command and returns its standard output; the error carries its standard error.
func Run(name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%s %s: %w\n%s", filepath.Base(name), strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes(), nil
}

// Release and Namespace are those of every render, so that golden files are stable.
const (
	Release   = "hookstream"
	Namespace = "hookstream"
)

// Template renders the chart with the values files given (none: the chart's defaults) and
// extra `--set` arguments.
func Template(helm string, valuesFiles []string, sets ...string) ([]byte, error) {
	args := []string{"template", Release, ChartDir(), "--namespace", Namespace}
	for _, f := range valuesFiles {
		args = append(args, "--values", f)
	}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	return Run(helm, args...)
}

// Object is one rendered document, decoded into its typed form.
type Object struct {
	// Source is the template that rendered it (helm's "# Source:" line).
	Source string
	Kind   string
	Name   string
	// Value is a pointer to the typed object (*appsv1.Deployment, *corev1.ConfigMap...).
	Value any
}

var (
	docSep    = regexp.MustCompile(`(?m)^---\s*$`)
	sourceRef = regexp.MustCompile(`(?m)^# Source: (\S+)`)
)

// newTyped returns an empty object of the type that apiVersion and kind name. Every kind the
// chart renders is listed: anything else is an error.
func newTyped(apiVersion, kind string) (any, bool) {
	switch apiVersion + "/" + kind {
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}, true
	case "v1/Service":
		return &corev1.Service{}, true
	case "v1/ServiceAccount":
		return &corev1.ServiceAccount{}, true
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}, true
	case "apps/v1/StatefulSet":
		return &appsv1.StatefulSet{}, true
	case "policy/v1/PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, true
	case "autoscaling/v2/HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}, true
	case "monitoring.coreos.com/v1/ServiceMonitor":
		return &monitoringv1.ServiceMonitor{}, true
	case "monitoring.coreos.com/v1/PrometheusRule":
		return &monitoringv1.PrometheusRule{}, true
	}
	return nil, false
}

// Decode splits a render into its documents and decodes each strictly into its Kubernetes
// type: an unknown or misspelt field, a duplicate key or a wrong type is an error, as the API
// server would refuse it.
func Decode(rendered []byte) ([]Object, error) {
	var objs []Object
	var errs []error
	for _, doc := range docSep.Split(string(rendered), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		src := ""
		if m := sourceRef.FindStringSubmatch(doc); m != nil {
			src = m[1]
		}
		var meta struct {
			metav1.TypeMeta   `json:",inline"`
			metav1.ObjectMeta `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", src, err))
			continue
		}
		v, ok := newTyped(meta.APIVersion, meta.Kind)
		if !ok {
			errs = append(errs, fmt.Errorf("%s: %s %s is not a kind the tests know: add it to newTyped", src, meta.APIVersion, meta.Kind))
			continue
		}
		if err := yaml.UnmarshalStrict([]byte(doc), v); err != nil {
			errs = append(errs, fmt.Errorf("%s (%s %s): %w", src, meta.Kind, meta.Name, err))
			continue
		}
		objs = append(objs, Object{Source: src, Kind: meta.Kind, Name: meta.Name, Value: v})
	}
	return objs, errors.Join(errs...)
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// Workload is a Deployment or a StatefulSet, reduced to what the assertions look at.
type Workload struct {
	Kind, Name string
	// Component is the app.kubernetes.io/component label: ingest, evaluator, timer, dispatcher
	// or all.
	Component string
	Selector  *metav1.LabelSelector
	Template  corev1.PodTemplateSpec
	// Claims are the StatefulSet's volumeClaimTemplates.
	Claims []corev1.PersistentVolumeClaim
}

// Workloads returns the Deployments and StatefulSets among objs.
func Workloads(objs []Object) []Workload {
	var ws []Workload
	for _, o := range objs {
		switch v := o.Value.(type) {
		case *appsv1.Deployment:
			ws = append(ws, Workload{Kind: o.Kind, Name: o.Name, Component: v.Labels["app.kubernetes.io/component"], Selector: v.Spec.Selector, Template: v.Spec.Template})
		case *appsv1.StatefulSet:
			ws = append(ws, Workload{Kind: o.Kind, Name: o.Name, Component: v.Labels["app.kubernetes.io/component"], Selector: v.Spec.Selector, Template: v.Spec.Template, Claims: v.Spec.VolumeClaimTemplates})
		}
	}
	return ws
}

// Find returns the objects of type T among objs.
func Find[T any](objs []Object) []T {
	var out []T
	for _, o := range objs {
		if v, ok := o.Value.(T); ok {
			out = append(out, v)
		}
	}
	return out
}
