package app

import (
	"fmt"
	"slices"
	"sort"

	"github.com/hookstream/hookstream/pkg/service"
)

// Module is one named part of a process. Modules depend on others by name;
// a target (ingest, evaluator, all, ...) is a module whose dependencies are
// what that process runs.
type Module struct {
	Name string
	Deps []string
	// Init builds the module's service. It runs after its dependencies'
	// Init, so it may use what they built. nil: the module only groups its
	// dependencies.
	Init func() (*service.Service, error)
	// Target makes the module selectable with `serve TARGET`.
	Target bool
}

// Modules is a registry of modules. Not safe for concurrent use.
type Modules struct {
	byName map[string]Module
}

// Register adds a module, replacing one of the same name.
func (m *Modules) Register(mod Module) {
	if m.byName == nil {
		m.byName = map[string]Module{}
	}
	m.byName[mod.Name] = mod
}

// Targets lists the selectable targets, sorted.
func (m *Modules) Targets() []string {
	var out []string
	for n, mod := range m.byName {
		if mod.Target {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// Resolve returns target and everything it depends on, each once, every
// module after its dependencies. Ties keep the order of Deps, so the result
// is deterministic.
func (m *Modules) Resolve(target string) ([]string, error) {
	if mod, ok := m.byName[target]; !ok || !mod.Target {
		return nil, fmt.Errorf("unknown target %q (targets: %v)", target, m.Targets())
	}
	var order []string
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name string, path []string) error
	visit = func(name string, path []string) error {
		switch state[name] {
		case 1:
			return fmt.Errorf("module dependency cycle: %v", append(path, name))
		case 2:
			return nil
		}
		mod, ok := m.byName[name]
		if !ok {
			return fmt.Errorf("module %q (needed by %v) is not registered", name, path)
		}
		state[name] = 1
		for _, d := range mod.Deps {
			if err := visit(d, append(slices.Clone(path), name)); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, name)
		return nil
	}
	if err := visit(target, nil); err != nil {
		return nil, err
	}
	return order, nil
}

// Init resolves target and builds the services of its modules in order.
func (m *Modules) Init(target string) ([]*service.Service, error) {
	order, err := m.Resolve(target)
	if err != nil {
		return nil, err
	}
	var svcs []*service.Service
	for _, name := range order {
		mod := m.byName[name]
		if mod.Init == nil {
			continue
		}
		s, err := mod.Init()
		if err != nil {
			return nil, fmt.Errorf("init %s: %w", name, err)
		}
		if s != nil {
			svcs = append(svcs, s)
		}
	}
	return svcs, nil
}
