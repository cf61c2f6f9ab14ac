package retention_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/modules/db"
	"github.com/gdpr-oss/gdpr/modules/erasure"
	"github.com/gdpr-oss/gdpr/modules/notify"
	"github.com/gdpr-oss/gdpr/modules/report"
	"github.com/gdpr-oss/gdpr/modules/requests"
	"github.com/gdpr-oss/gdpr/modules/retention"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

const (
	day             = 24 * time.Hour
	reportRetention = 14 * day
)

// files is report storage that counts removals and can be slowed down.
type files struct {
	local   *report.Local
	delay   time.Duration
	mu      sync.Mutex
	deletes map[string]int
}

func newFiles(t testing.TB, dir string) *files {
	t.Helper()
	l, err := report.NewLocal(dir)
	require.NoError(t, err)
	return &files{local: l, deletes: map[string]int{}}
}

func (f *files) Delete(ctx context.Context, id string) error {
	if f.delay > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(f.delay):
		}
	}
	f.mu.Lock()
	f.deletes[id]++
	f.mu.Unlock()
	return f.local.Delete(ctx, id)
}

func (f *files) count(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.deletes[id]
}

func (f *files) exists(t testing.TB, id string) bool {
	t.Helper()
	_, err := os.Stat(filepath.Join(f.local.Dir(), id+".zip.enc"))
	if os.IsNotExist(err) {
		return false
	}
	require.NoError(t, err)
	return true
}

// fixture writes rows with chosen ages relative to now.
type fixture struct {
	t     testing.TB
	db    *gorm.DB
	files *files
	now   time.Time
}

func (f *fixture) request(state requests.State, finishedAgo time.Duration, scrubbed bool) string {
	f.t.Helper()
	id := uuid.NewString()
	at := f.now.Add(-finishedAgo)
	var completed any = at
	if state != requests.StateCompleted {
		completed = nil
	}
	subject, email := "subj-"+id[:8], id[:8]+"@example.com"
	var scrubbedAt any
	if scrubbed {
		subject, email, scrubbedAt = "", "", at
	}
	require.NoError(f.t, f.db.Exec(`INSERT INTO requests (id, type, state, subject_id, subject_email, had_email, submitted_at, due_at,
			completed_at, updated_at, pii_scrubbed_at)
		VALUES (?, 'access', ?, ?, ?, true, ?, ?, ?, ?, ?)`, id, state, subject, email, at, at.Add(30*day), completed, at, scrubbedAt).Error)
	require.NoError(f.t, f.db.Exec(`INSERT INTO request_attempts (request_id, attempt, started_at, outcome) VALUES (?, 1, ?, 'succeeded')`, id, at).Error)
	return id
}

// report stores a report file for requestID built ago; deleted says its
// deletion was recorded and done.
func (f *fixture) report(requestID string, ago time.Duration, deleted bool) string {
	f.t.Helper()
	id := "r-" + requestID
	var deletedAt any
	reason := ""
	if deleted {
		deletedAt, reason = f.now.Add(-ago), requests.DeletedRetention
	} else {
		p, err := f.files.local.Create(f.t.Context(), id)
		require.NoError(f.t, err)
		_, err = p.Write([]byte("sealed report"))
		require.NoError(f.t, err)
		require.NoError(f.t, p.Commit(f.t.Context()))
	}
	require.NoError(f.t, f.db.Exec(`INSERT INTO reports (id, request_id, bytes, sha256, created_at, deleted_at, deleted_reason, file_removed)
		VALUES (?, ?, 13, 'x', ?, ?, ?, ?)`, id, requestID, f.now.Add(-ago), deletedAt, reason, deleted).Error)
	return id
}

func (f *fixture) notification(requestID string, ago time.Duration) string {
	f.t.Helper()
	key := notify.TemplateReportReady + ":" + requestID
	require.NoError(f.t, f.db.Exec(`INSERT INTO notifications (key, request_id, template, message_id, state, created_at)
		VALUES (?, ?, ?, 'm', 'sent', ?)`, key, requestID, notify.TemplateReportReady, f.now.Add(-ago)).Error)
	return key
}

func (f *fixture) erasure(state erasure.ErasureState, ago time.Duration) string {
	f.t.Helper()
	id := uuid.NewString()
	at := f.now.Add(-ago)
	var finished any
	if state == erasure.ErasureFinished {
		finished = at
	}
	require.NoError(f.t, f.db.Exec(`INSERT INTO erasures (request_id, state, created_at, finished_at, updated_at) VALUES (?, ?, ?, ?, ?)`,
		id, state, at, finished, at).Error)
	require.NoError(f.t, f.db.Exec(`INSERT INTO erasure_participants (request_id, participant, kind, state) VALUES (?, 'crm', 'amqp', ?)`, id, erasure.StateErased).Error)
	return id
}

func (f *fixture) count(query string, args ...any) int {
	f.t.Helper()
	var n int
	require.NoError(f.t, f.db.Raw(query, args...).Scan(&n).Error)
	return n
}

func testConfig(batch int) retention.Config {
	c := retention.DefaultConfig()
	c.Batch = batch
	return c
}

func steps(cfg retention.Config, gdb *gorm.DB, fs *files) []retention.Step {
	return retention.Steps(cfg, reportRetention, requests.NewStore(gdb, fs),
		func(ctx context.Context, cutoff time.Time, limit int, dry bool) ([]string, error) {
			return notify.DeleteRecords(ctx, gdb, cutoff, limit, dry)
		},
		func(ctx context.Context, cutoff time.Time, limit int, dry bool) ([]string, error) {
			return erasure.DeleteRecords(ctx, gdb, cutoff, limit, dry)
		})
}

func newSweeper(t testing.TB, cfg retention.Config, gdb *gorm.DB, fs *files, now time.Time, reg prometheus.Registerer) *retention.Sweeper {
	t.Helper()
	s, err := retention.New(cfg, steps(cfg, gdb, fs), testkit.Logger(t), reg, retention.WithClock(func() time.Time { return now }))
	require.NoError(t, err)
	return s
}

func counterValues(t *testing.T, reg *prometheus.Registry) map[string]int {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	out := map[string]int{}
	for _, mf := range mfs {
		if mf.GetName() != "gdpr_retention_deleted_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			out[label(m, "kind")] = int(m.GetCounter().GetValue())
		}
	}
	return out
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// TestSweeperDeletesExactlyWhatIsDue: with the clock fixed, one sweep
// deletes every item past its lifetime (in batches smaller than the
// backlog) and nothing younger, a dry run before it lists the same and
// changes nothing, and a second sweep finds nothing.
func TestSweeperDeletesExactlyWhatIsDue(t *testing.T) {
	t.Parallel()
	gdb, _ := testkit.Postgres(t)
	f := &fixture{t: t, db: gdb, files: newFiles(t, t.TempDir()), now: time.Now().UTC().Truncate(time.Microsecond)}

	reportDue := f.request(requests.StateCompleted, 15*day, false)
	dueReport := f.report(reportDue, 15*day, false)
	young := f.request(requests.StateCompleted, 13*day, false)
	youngReport := f.report(young, 13*day, false)
	scrubDue := f.request(requests.StateCompleted, 31*day, false)
	scrubReport := f.report(scrubDue, 31*day, false)
	failedDue := f.request(requests.StateFailed, 31*day, false)
	backlog := make([]string, 5)
	for i := range backlog {
		backlog[i] = f.report(f.request(requests.StateCompleted, 20*day, false), 20*day, false)
	}
	recordDue := f.request(requests.StateCompleted, 731*day, true)
	f.report(recordDue, 731*day, true)
	dueNote := f.notification(recordDue, 731*day)
	recordYoung := f.request(requests.StateCompleted, 729*day, true)
	youngNote := f.notification(recordYoung, 729*day)
	open := f.request(requests.StateProcessing, 800*day, false)
	erasureDue := f.erasure(erasure.ErasureFinished, 731*day)
	erasureYoung := f.erasure(erasure.ErasureFinished, 700*day)
	erasureOpen := f.erasure(erasure.ErasureOpen, 800*day)

	reg := prometheus.NewRegistry()
	s := newSweeper(t, testConfig(3), gdb, f.files, f.now, reg)

	dry, err := s.DryRun(t.Context(), 100)
	require.NoError(t, err)
	listed := map[string][]string{}
	for _, it := range dry {
		listed[it.Kind] = append(listed[it.Kind], it.ID)
	}
	require.ElementsMatch(t, append([]string{dueReport, scrubReport}, backlog...), listed[retention.KindReport])
	require.ElementsMatch(t, []string{scrubDue, failedDue}, listed[retention.KindPersonalData])
	require.ElementsMatch(t, []string{recordDue}, listed[retention.KindRequestRecord])
	require.ElementsMatch(t, []string{erasureDue}, listed[retention.KindErasureRecord])
	require.Equal(t, 0, f.count(`SELECT count(*) FROM reports WHERE deleted_at IS NOT NULL AND NOT file_removed`), "the dry run deleted nothing")
	require.True(t, f.files.exists(t, dueReport))

	counts, err := s.Sweep(t.Context())
	require.NoError(t, err)
	want := map[string]int{
		retention.KindReportFile: 0, retention.KindReport: 7, retention.KindPersonalData: 2,
		retention.KindRequestRecord: 1, retention.KindNotification: 1, retention.KindErasureRecord: 1,
	}
	require.Equal(t, want, counts)
	require.Equal(t, want, counterValues(t, reg))

	for _, id := range append([]string{dueReport, scrubReport}, backlog...) {
		require.False(t, f.files.exists(t, id), id)
		require.Equal(t, 1, f.files.count(id), id)
		require.Equal(t, 1, f.count(`SELECT count(*) FROM reports WHERE id = ? AND deleted_at = ? AND deleted_reason = 'retention' AND file_removed`, id, f.now), id)
	}
	require.True(t, f.files.exists(t, youngReport))
	require.Equal(t, 1, f.count(`SELECT count(*) FROM reports WHERE id = ? AND deleted_at IS NULL`, youngReport))
	for _, id := range []string{scrubDue, failedDue} {
		require.Equal(t, 1, f.count(`SELECT count(*) FROM requests WHERE id = ? AND subject_id = '' AND subject_email = ''
			AND pii_scrubbed_at = ? AND erased_by IS NULL AND had_email`, id, f.now), id)
	}
	for _, id := range []string{reportDue, young, open} {
		require.Equal(t, 1, f.count(`SELECT count(*) FROM requests WHERE id = ? AND subject_id <> '' AND subject_email <> ''`, id), id)
	}
	require.Zero(t, f.count(`SELECT count(*) FROM requests WHERE id = ?`, recordDue))
	require.Zero(t, f.count(`SELECT count(*) FROM request_attempts WHERE request_id = ?`, recordDue))
	require.Zero(t, f.count(`SELECT count(*) FROM reports WHERE request_id = ?`, recordDue))
	require.Equal(t, 1, f.count(`SELECT count(*) FROM requests WHERE id = ?`, recordYoung))
	require.Zero(t, f.count(`SELECT count(*) FROM notifications WHERE key = ?`, dueNote))
	require.Equal(t, 1, f.count(`SELECT count(*) FROM notifications WHERE key = ?`, youngNote))
	require.Zero(t, f.count(`SELECT count(*) FROM erasures WHERE request_id = ?`, erasureDue))
	require.Zero(t, f.count(`SELECT count(*) FROM erasure_participants WHERE request_id = ?`, erasureDue))
	require.Equal(t, 2, f.count(`SELECT count(*) FROM erasures WHERE request_id IN (?, ?)`, erasureYoung, erasureOpen))

	again, err := s.Sweep(t.Context())
	require.NoError(t, err)
	for kind, n := range again {
		require.Zero(t, n, kind)
	}
}

// TestTwoSweepersDeleteEachItemOnce: two workers sweeping the same backlog
// at once, in small batches, delete every due item exactly once between
// them, and remove each file once.
func TestTwoSweepersDeleteEachItemOnce(t *testing.T) {
	t.Parallel()
	gdb, _ := testkit.Postgres(t)
	f := &fixture{t: t, db: gdb, files: newFiles(t, t.TempDir()), now: time.Now().UTC()}
	const dueReports, dueScrubs = 150, 60
	var reports []string
	for range dueReports {
		reports = append(reports, f.report(f.request(requests.StateCompleted, day, false), 20*day, false))
	}
	var young []string
	for range 20 {
		young = append(young, f.report(f.request(requests.StateCompleted, day, false), day, false))
	}
	for range dueScrubs {
		f.request(requests.StateCompleted, 40*day, false)
	}
	cfg := testConfig(7)
	regs := []*prometheus.Registry{prometheus.NewRegistry(), prometheus.NewRegistry()}
	results := make([]map[string]int, 2)
	var wg sync.WaitGroup
	for i := range 2 {
		s := newSweeper(t, cfg, gdb, f.files, f.now, regs[i])
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			results[i], err = s.Sweep(t.Context())
			require.NoError(t, err)
		}()
	}
	wg.Wait()
	require.Equal(t, dueReports, results[0][retention.KindReport]+results[1][retention.KindReport])
	require.Equal(t, dueScrubs, results[0][retention.KindPersonalData]+results[1][retention.KindPersonalData])
	require.Zero(t, results[0][retention.KindReportFile]+results[1][retention.KindReportFile])
	t.Logf("reports deleted by each sweeper: %d and %d; requests scrubbed: %d and %d",
		results[0][retention.KindReport], results[1][retention.KindReport], results[0][retention.KindPersonalData], results[1][retention.KindPersonalData])
	for _, id := range reports {
		require.Equal(t, 1, f.files.count(id), "file %s removed once", id)
		require.False(t, f.files.exists(t, id))
	}
	for _, id := range young {
		require.True(t, f.files.exists(t, id))
	}
	require.Equal(t, dueReports, f.count(`SELECT count(*) FROM reports WHERE deleted_at IS NOT NULL AND file_removed`))
	m0, m1 := counterValues(t, regs[0]), counterValues(t, regs[1])
	require.Equal(t, dueReports, m0[retention.KindReport]+m1[retention.KindReport])
}

const (
	envChildDSN = "GDPR_RETENTION_CHILD_DSN"
	envChildDir = "GDPR_RETENTION_CHILD_DIR"
	envChildNow = "GDPR_RETENTION_CHILD_NOW"
)

// TestSweepChildProcess is the process TestSIGKILLMidSweepLeavesNothingHalfDone
// kills: a sweep whose file removals are slow. It does nothing on its own.
func TestSweepChildProcess(t *testing.T) {
	dsn := os.Getenv(envChildDSN)
	if dsn == "" {
		t.Skip("run by TestSIGKILLMidSweepLeavesNothingHalfDone")
	}
	gdb, err := db.Open(t.Context(), db.Config{DSN: dsn, MaxOpenConns: 4})
	require.NoError(t, err)
	ns, err := strconv.ParseInt(os.Getenv(envChildNow), 10, 64)
	require.NoError(t, err)
	fs := newFiles(t, os.Getenv(envChildDir))
	fs.delay = 40 * time.Millisecond
	s := newSweeper(t, testConfig(5), gdb, fs, time.Unix(0, ns).UTC(), nil)
	_, err = s.Sweep(t.Context())
	require.NoError(t, err)
	fmt.Println("CHILD swept")
}

// TestSIGKILLMidSweepLeavesNothingHalfDone kills a sweeping process while
// it removes files: every report is then either live with its file, or
// deleted (its file maybe still there, never the other way round), and the
// next sweep finishes exactly the due ones, each once.
func TestSIGKILLMidSweepLeavesNothingHalfDone(t *testing.T) {
	t.Parallel()
	gdb, dsn := testkit.Postgres(t)
	dir := t.TempDir()
	f := &fixture{t: t, db: gdb, files: newFiles(t, dir), now: time.Now().UTC().Truncate(time.Microsecond)}
	const due = 80
	var dueIDs, young []string
	for range due {
		dueIDs = append(dueIDs, f.report(f.request(requests.StateCompleted, day, false), 15*day, false))
	}
	for range 20 {
		young = append(young, f.report(f.request(requests.StateCompleted, day, false), 13*day, false))
	}

	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestSweepChildProcess$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), envChildDSN+"="+dsn, envChildDir+"="+dir, envChildNow+"="+strconv.FormatInt(f.now.UnixNano(), 10))
	require.NoError(t, cmd.Start())
	testkit.Eventually(t, 2*time.Minute, func() bool {
		return f.count(`SELECT count(*) FROM reports WHERE deleted_at IS NOT NULL`) >= 10
	}, "the child deleted some reports")
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()

	check := func() (deleted, pending int) {
		var rows []struct {
			ID          string
			Deleted     bool
			FileRemoved bool
		}
		require.NoError(t, gdb.Raw(`SELECT id, deleted_at IS NOT NULL AS deleted, file_removed FROM reports`).Scan(&rows).Error)
		for _, r := range rows {
			switch {
			case !r.Deleted:
				require.True(t, f.files.exists(t, r.ID), "live report %s has its file", r.ID)
			case r.FileRemoved:
				require.False(t, f.files.exists(t, r.ID), "report %s recorded removed has no file", r.ID)
				deleted++
			default:
				deleted++
				pending++
			}
		}
		return deleted, pending
	}
	deletedBefore, pendingBefore := check()
	require.Less(t, deletedBefore, due, "killed mid-sweep")
	t.Logf("killed after %d of %d deletions committed, %d of them with the file not yet removed", deletedBefore, due, pendingBefore)

	// Past the purge's grace, as a worker sweeping after the restart is.
	s := newSweeper(t, testConfig(5), gdb, f.files, f.now.Add(10*time.Minute), nil)
	counts, err := s.Sweep(t.Context())
	require.NoError(t, err)
	require.Equal(t, due-deletedBefore, counts[retention.KindReport])
	require.Equal(t, pendingBefore, counts[retention.KindReportFile])
	deletedAfter, pendingAfter := check()
	require.Equal(t, due, deletedAfter)
	require.Zero(t, pendingAfter)
	for _, id := range dueIDs {
		require.False(t, f.files.exists(t, id))
	}
	for _, id := range young {
		require.True(t, f.files.exists(t, id))
	}
}

// closed writes a request an operator ended (cancelled or denied) closedAgo:
// no completed_at, its end in closed_at. As Deny leaves it, a denied one
// still holds the address (until the denial email is sent), the phone
// number and the named identifiers; a cancelled one was scrubbed at once
// but has no pii_scrubbed_at.
func (f *fixture) closed(state string, closedAgo time.Duration) string {
	f.t.Helper()
	id := uuid.NewString()
	at := f.now.Add(-closedAgo)
	email, phone, ids := id[:8]+"@example.com", "+4915100000009", `{"loyalty_card":"LC-9"}`
	if state == string(requests.StateCancelled) {
		email, phone, ids = "", "", "{}"
	}
	require.NoError(f.t, f.db.Exec(`INSERT INTO requests (id, type, state, subject_id, subject_email, subject_phone, subject_identifiers, had_email,
			submitted_at, due_at, updated_at, closed_at, closed_reason, denial_code)
		VALUES (?, 'access', ?, '', ?, ?, ?::jsonb, true, ?, ?, ?, ?, 'operator note', 'unverified')`,
		id, state, email, phone, ids, at, at.Add(30*day), at, at).Error)
	return id
}

// TestSweeperScrubsAndForgetsRequestsAnOperatorEnded: a cancelled or
// denied request is finished too: its personal data (with the operator's
// free-text reason) goes after retention.scrub_after and its record after
// retention.record_for, like a completed or failed one's. (They were left out: a denied request kept
// its phone number and identifiers, and both kinds their row, for ever.)
func TestSweeperScrubsAndForgetsRequestsAnOperatorEnded(t *testing.T) {
	t.Parallel()
	gdb, _ := testkit.Postgres(t)
	f := &fixture{t: t, db: gdb, files: newFiles(t, t.TempDir()), now: time.Now().UTC().Truncate(time.Microsecond)}
	deniedDue := f.closed(string(requests.StateDenied), 31*day)
	deniedYoung := f.closed(string(requests.StateDenied), 29*day)
	cancelledRecordDue := f.closed(string(requests.StateCancelled), 731*day)
	deniedRecordDue := f.closed(string(requests.StateDenied), 800*day)
	cancelledYoung := f.closed(string(requests.StateCancelled), 700*day)

	s := newSweeper(t, testConfig(10), gdb, f.files, f.now, nil)
	dry, err := s.DryRun(t.Context(), 100)
	require.NoError(t, err)
	listed := map[string][]string{}
	for _, it := range dry {
		listed[it.Kind] = append(listed[it.Kind], it.ID)
	}
	require.ElementsMatch(t, []string{deniedDue, deniedRecordDue, cancelledRecordDue, cancelledYoung}, listed[retention.KindPersonalData])

	counts, err := s.Sweep(t.Context())
	require.NoError(t, err)
	require.Equal(t, 4, counts[retention.KindPersonalData])
	require.Equal(t, 2, counts[retention.KindRequestRecord])
	require.Equal(t, 1, f.count(`SELECT count(*) FROM requests WHERE id = ? AND subject_email = '' AND subject_phone = ''
		AND subject_identifiers = '{}' AND closed_reason = '' AND denial_code = 'unverified' AND pii_scrubbed_at IS NOT NULL`, deniedDue),
		"the operator's free text goes with the subject; the reason code stays")
	require.Equal(t, 1, f.count(`SELECT count(*) FROM requests WHERE id = ? AND subject_email <> '' AND subject_phone <> '' AND closed_reason <> ''
		AND pii_scrubbed_at IS NULL`, deniedYoung))
	require.Zero(t, f.count(`SELECT count(*) FROM requests WHERE id IN (?, ?)`, cancelledRecordDue, deniedRecordDue))
	require.Equal(t, 1, f.count(`SELECT count(*) FROM requests WHERE id = ? AND pii_scrubbed_at IS NOT NULL`, cancelledYoung))
}
