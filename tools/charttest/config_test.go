package charttest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// hookstream builds the binary once (the Go build cache makes it quick after the first time).
func hookstream(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "charttest-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "hookstream")
		// From the module's directory, so that it builds with and without the workspace.
		cmd := exec.Command("go", "build", "-o", binPath, ".")
		cmd.Dir = filepath.Join(Root(), "services", "hookstream")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = err
			t.Logf("%s", out)
		}
	})
	if binErr != nil {
		t.Fatalf("go build ./services/hookstream: %v", binErr)
	}
	return binPath
}

// TestConfigVerify runs the real binary on each rendered pod's command line and config file,
// with the pod's environment (Secret values replaced by placeholders), under -config.verify:
// the config must pass the strict loader, and each pod must get its target and instance id.
func TestConfigVerify(t *testing.T) {
	for name, file := range ciValues(t) {
		t.Run(name, func(t *testing.T) {
			objs := decode(t, file)
			_, cfgText, _ := configOf(t, objs)
			cfgFile := filepath.Join(t.TempDir(), "config.yaml")
			if err := os.WriteFile(cfgFile, []byte(cfgText), 0o600); err != nil {
				t.Fatal(err)
			}
			bin := hookstream(t)
			for _, w := range Workloads(objs) {
				t.Run(w.Kind+"/"+w.Name, func(t *testing.T) {
					c := w.Template.Spec.Containers[0]
					podName := w.Name + "-0"
					env := []string{"PATH=" + os.Getenv("PATH")}
					vars := map[string]string{}
					for _, e := range c.Env {
						var v string
						switch {
						case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name":
							v = podName
						case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
							v = "secret-" + strings.ToLower(e.Name)
						case e.ValueFrom != nil:
							continue
						default:
							v = e.Value
						}
						vars[e.Name] = v
						env = append(env, e.Name+"="+v)
					}
					args := make([]string, 0, len(c.Args)+1)
					for _, a := range c.Args {
						a = varRef.ReplaceAllStringFunc(a, func(m string) string { return vars[m[2:len(m)-1]] })
						a = strings.Replace(a, "-config.file="+configFile, "-config.file="+cfgFile, 1)
						args = append(args, a)
					}
					cmd := exec.Command(bin, append(args, "-config.verify")...)
					cmd.Env = env
					out, err := cmd.CombinedOutput()
					if err != nil {
						t.Fatalf("hookstream %s -config.verify: %v\n%s", strings.Join(args, " "), err, out)
					}
					var got struct {
						Target    string
						Evaluator struct {
							InstanceID string `yaml:"instance_id"`
						}
						Timer struct {
							InstanceID string `yaml:"instance_id"`
						}
						Ingest struct {
							Tokens      []string `yaml:"tokens"`
							AdminTokens []string `yaml:"admin_tokens"`
						}
					}
					if err := yaml.Unmarshal(out, &got); err != nil {
						t.Fatalf("-config.verify output: %v\n%s", err, out)
					}
					if got.Target != w.Component {
						t.Errorf("target %q, want %q", got.Target, w.Component)
					}
					wantEval := w.Component == "evaluator" || w.Component == "all"
					wantTimer := w.Component == "timer" || w.Component == "all"
					if (got.Evaluator.InstanceID == podName) != wantEval || (got.Timer.InstanceID == podName) != wantTimer {
						t.Errorf("instance ids evaluator=%q timer=%q for pod %s", got.Evaluator.InstanceID, got.Timer.InstanceID, podName)
					}
					if apiPod := w.Component == "ingest" || w.Component == "all"; apiPod && hasSecretEnv(c, "HOOKSTREAM_INGEST_TOKENS") && (len(got.Ingest.Tokens) == 0 || len(got.Ingest.AdminTokens) == 0) {
						t.Errorf("the API pod runs without tokens although its Secret is set")
					}
				})
			}
		})
	}
}

func hasSecretEnv(c corev1.Container, name string) bool {
	for _, e := range c.Env {
		if e.Name == name && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			return true
		}
	}
	return false
}
