package health

// Config is health's part of the telemetry section.
type Config struct {
	// Pprof serves Go's runtime profiles (CPU, heap, goroutines, execution trace) under /debug/pprof/ on each role's admin address, for an operator finding where a role spends its CPU. Off by default: a profile holds code locations and counts, not request data, but taking one costs the role CPU while it runs, and the admin address is often reachable from more places than an operator's shell.
	Pprof bool `yaml:"pprof"`
}

// DefaultConfig serves no profiles.
func DefaultConfig() Config { return Config{} }

// Validate has nothing to refuse: both values of Pprof are valid.
func (Config) Validate() error { return nil }
