package retention_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/retention"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// TestSweeperStopWaitsForAStepInFlight: Stop ends the sweep's context and
// returns only once the step running in it has returned (modules/lifecycle),
// so a batch in flight is committed or rolled back before the role exits.
func TestSweeperStopWaitsForAStepInFlight(t *testing.T) {
	t.Parallel()
	entered, cancelled, release := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var calls atomic.Int32
	var returned atomic.Bool
	step := retention.Step{Kind: retention.KindReport, Run: func(ctx context.Context, _ time.Time, _ int, _ bool) ([]string, error) {
		if calls.Add(1) > 1 {
			return nil, nil
		}
		close(entered)
		<-ctx.Done()
		close(cancelled)
		<-release // still busy after the cancel: Stop must wait for this
		returned.Store(true)
		return nil, ctx.Err()
	}}
	cfg := retention.DefaultConfig()
	cfg.Interval = time.Hour
	s, err := retention.New(cfg, []retention.Step{step}, testkit.Logger(t), nil)
	require.NoError(t, err)
	require.NoError(t, s.Start(t.Context()))
	<-entered

	stopped := make(chan error, 1)
	go func() { stopped <- s.Stop(t.Context()) }()
	<-cancelled
	select {
	case <-stopped:
		t.Fatal("Stop returned while the step still ran")
	default:
	}
	close(release)
	require.NoError(t, <-stopped)
	require.True(t, returned.Load(), "the step returned before Stop did")
}

// TestSweeperPanicReachesFailed: a step that panics does not crash the
// process; the failure reaches the role through Failed, which drains the
// other components and exits 1.
func TestSweeperPanicReachesFailed(t *testing.T) {
	t.Parallel()
	step := retention.Step{Kind: retention.KindReport, Run: func(context.Context, time.Time, int, bool) ([]string, error) {
		panic(errors.New("step broke"))
	}}
	cfg := retention.DefaultConfig()
	cfg.Interval = time.Hour
	s, err := retention.New(cfg, []retention.Step{step}, testkit.Logger(t), nil)
	require.NoError(t, err)
	require.NoError(t, s.Start(t.Context()))
	select {
	case err := <-s.Failed():
		require.ErrorContains(t, err, "step broke")
	case <-time.After(10 * time.Second):
		t.Fatal("the panic did not reach Failed")
	}
	require.NoError(t, s.Stop(t.Context()))
}
