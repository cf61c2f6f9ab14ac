package requests_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/config"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// checkReport asserts the downloaded report of subject i holds exactly the
// seeded data, and its manifest counts and checksums match.
func checkReport(t *testing.T, requestID string, i int, files map[string][]byte) {
	t.Helper()
	var manifest struct {
		RequestID string `json:"request_id"`
		SubjectID string `json:"subject_id"`
		Sources   []struct {
			Name string `json:"name"`
			Rows int    `json:"rows"`
		} `json:"sources"`
		Files []struct {
			Name   string `json:"name"`
			SHA256 string `json:"sha256"`
		} `json:"files"`
	}
	require.NoError(t, json.Unmarshal(files["manifest.json"], &manifest), "%s", files["manifest.json"])
	require.Equal(t, requestID, manifest.RequestID)
	require.Equal(t, subjectID(i), manifest.SubjectID)
	rows := map[string]int{}
	for _, s := range manifest.Sources {
		rows[s.Name] = s.Rows
	}
	require.Len(t, manifest.Files, 4, "a JSON and a CSV file per source")
	for _, f := range manifest.Files {
		require.Equal(t, f.SHA256, sha256hex(files[f.Name]), "checksum of %s", f.Name)
	}
	require.Equal(t, map[string]int{"orders": ordersOf(i), "events": eventsOf(i)}, rows)

	var orders []struct {
		Item   string `json:"item"`
		Amount int    `json:"amount"`
	}
	require.NoError(t, json.Unmarshal(files["orders.json"], &orders), "%s", files["orders.json"])
	require.Len(t, orders, ordersOf(i))
	for k, o := range orders {
		require.Equal(t, fmt.Sprintf("item-%d", k), o.Item)
		require.Equal(t, i*10+k, o.Amount)
	}
	var events []struct {
		Kind string `json:"kind"`
		Seq  int    `json:"seq"`
	}
	require.NoError(t, json.Unmarshal(files["events.json"], &events), "%s", files["events.json"])
	require.Len(t, events, eventsOf(i))
	for k, e := range events {
		require.Equal(t, "login", e.Kind)
		require.Equal(t, k, e.Seq)
	}
	csv := strings.Split(strings.TrimSpace(string(files["orders.csv"])), "\n")
	require.Len(t, csv, ordersOf(i)+1, "header and one line per order")
}

func TestEndToEndAccessRequests(t *testing.T) {
	t.Parallel()
	const n = 200
	s := newSystem(t, n, nil)
	s.start("all")
	ids := s.submitAll(n)
	s.waitStates(ids, "completed", 90*time.Second)

	s.waitEmails(n)
	emails := s.emails()
	for i, id := range ids {
		require.Len(t, emails[id], 1, "exactly one email for request %s", id)
		require.Equal(t, subjectID(i)+"@example.com", emails[id][0].To[0].Address)
		checkReport(t, id, i, s.download(emails[id][0]))
		require.Equal(t, 1, s.src.callsOf(subjectID(i)), "the HTTP source was read once for %s", id)
	}
	require.Equal(t, n, s.count(`SELECT count(*) FROM reports`))
	require.Equal(t, n, s.count(`SELECT count(*) FROM notifications WHERE state = 'sent'`))
}

func TestWorkerDownAtSubmission(t *testing.T) {
	t.Parallel()
	const n = 20
	s := newSystem(t, n, nil)
	s.start("serve")
	s.start("scheduler")
	ids := s.submitAll(n)
	require.Zero(t, s.count(`SELECT count(*) FROM requests`), "nothing stored while the worker is down")
	s.start("worker")
	s.waitStates(ids, "completed", 60*time.Second)
	s.waitEmails(n)
	emails := s.emails()
	for _, id := range ids {
		require.Len(t, emails[id], 1)
	}
}

func TestSourceFailuresRetryWithBackoffThenCompleteOrFail(t *testing.T) {
	t.Parallel()
	s := newSystem(t, 2, func(c *config.Config) {
		c.Worker.MaxAttempts = 3
		c.Worker.BackoffBase = 300 * time.Millisecond
		c.Worker.BackoffMax = time.Second
	})
	s.src.fail = func(subject string, n int) bool {
		switch subject {
		case subjectID(0):
			return n <= 2 // fails twice, then succeeds
		case subjectID(1):
			return true // always fails
		}
		return false
	}
	s.start("all")
	flaky, err := s.submit(t.Context(), "access", 0)
	require.NoError(t, err)
	broken, err := s.submit(t.Context(), "access", 1)
	require.NoError(t, err)
	s.waitStates([]string{flaky}, "completed", 60*time.Second)
	s.waitStates([]string{broken}, "failed", 60*time.Second)

	type attempt struct {
		Attempt       int
		Outcome       string
		ErrorClass    string
		StartedAt     time.Time
		FinishedAt    *time.Time
		NextAttemptAt *time.Time
	}
	history := func(id string) []attempt {
		var h []attempt
		require.NoError(t, s.db.Raw(`SELECT attempt, outcome, error_class, started_at, finished_at, next_attempt_at
			FROM request_attempts WHERE request_id = ? ORDER BY attempt`, id).Scan(&h).Error)
		return h
	}
	h := history(flaky)
	require.Len(t, h, 3, "completed on attempt 3")
	for k := 0; k < 2; k++ {
		require.Equal(t, "failed", h[k].Outcome)
		require.NotEmpty(t, h[k].ErrorClass)
		require.NotNil(t, h[k].NextAttemptAt, "backoff recorded")
		ceiling := 300 * time.Millisecond << k
		require.LessOrEqual(t, h[k].NextAttemptAt.Sub(*h[k].FinishedAt), ceiling+50*time.Millisecond)
		require.False(t, h[k+1].StartedAt.Before(*h[k].NextAttemptAt), "attempt %d started after its backoff", k+2)
	}
	require.Equal(t, "succeeded", h[2].Outcome)
	require.Equal(t, 3, s.src.callsOf(subjectID(0)))

	hb := history(broken)
	require.Len(t, hb, 3)
	for _, a := range hb {
		require.Equal(t, "failed", a.Outcome)
	}
	var row struct {
		Attempts       int
		LastErrorClass string
	}
	require.NoError(t, s.db.Raw(`SELECT attempts, last_error_class FROM requests WHERE id = ?`, broken).Scan(&row).Error)
	require.Equal(t, 3, row.Attempts)
	require.NotEmpty(t, row.LastErrorClass)
	require.Zero(t, s.count(`SELECT count(*) FROM reports WHERE request_id = ?`, broken))

	// Only the flaky request's report is stored; the failed one left no file.
	s.waitEmails(1)
	require.Len(t, s.storedFiles(), 1, "no file left by the failed request")
}

func TestWorkerKilledDuringReportGenerationRepeatedly(t *testing.T) {
	t.Parallel()
	const n, kills = 40, 20
	s := newSystem(t, n, func(c *config.Config) {
		c.Lock.TTL = 2 * time.Second // a killed worker's lock and lease run out fast
		c.Worker.MaxAttempts = 100   // every kill counts as an attempt of what it held
		// Few builds at once, each slower than the kill moment is late, so
		// that most kills land in a running build even on a quiet machine
		// and the work outlasts the twenty kills.
		c.Worker.Concurrency = 2
		c.Notify.ResendAfter = 3 * time.Second
		c.Notify.Timeout = 2 * time.Second
		// Killed builds leave temp files; the sweep removes them once
		// older than any live build here takes.
		c.Worker.SweepInterval = 500 * time.Millisecond
		c.Worker.SweepAge = 3 * time.Second
	})
	s.src.delay = func() time.Duration { return jitter(100*time.Millisecond, 600*time.Millisecond) }
	s.start("serve")
	s.start("scheduler")
	ids := s.submitAll(n)
	for k := 0; k < kills; k++ {
		// Each restart listens on a fresh admin port: the one a killed
		// worker held may meanwhile be any other process's ephemeral port.
		w := s.start("worker", "GDPR_WORKER_ADMIN_ADDR="+freeAddr(t))
		// Wait until a build is running, then kill at a varied moment in it.
		testkit.Eventually(t, 30*time.Second, func() bool {
			return s.count(`SELECT count(*) FROM requests WHERE state = 'processing'`) > 0 ||
				s.count(`SELECT count(*) FROM requests WHERE state <> 'completed'`) == 0
		}, "a report is being built")
		time.Sleep(jitter(0, 300*time.Millisecond)) //nolint:forbidigo // the kill moment, not a wait for an effect
		w.kill()
	}
	var done int
	require.NoError(t, s.db.Raw(`SELECT count(*) FROM requests WHERE state = 'completed'`).Scan(&done).Error)
	t.Logf("%d of %d requests completed before the last kill", done, n)
	require.Less(t, done, n, "the kills hit requests still in progress")

	s.start("worker")
	s.waitStates(ids, "completed", 90*time.Second)
	testkit.Eventually(t, 60*time.Second, func() bool {
		return s.count(`SELECT count(*) FROM notifications WHERE state = 'sent'`) == n
	}, "every email recorded as sent")

	require.Equal(t, n, s.count(`SELECT count(*) FROM reports`), "exactly one report each")
	require.Equal(t, n, s.count(`SELECT count(DISTINCT request_id) FROM reports`))
	testkit.Eventually(t, 30*time.Second, func() bool { return len(s.storedFiles()) == n },
		"no orphan report files: one file per request once the sweep ran")
	abandoned := s.count(`SELECT count(*) FROM request_attempts WHERE outcome = 'abandoned'`)
	require.Positive(t, abandoned, "some attempts died with the worker and were taken over")

	emails := s.emails()
	dups := 0
	for i, id := range ids {
		require.NotEmpty(t, emails[id], "email for request %s", id)
		for _, m := range emails[id] {
			require.Equal(t, emails[id][0].MessageID, m.MessageID, "a resend carries the same Message-ID")
		}
		dups += len(emails[id]) - 1
		checkReport(t, id, i, s.download(emails[id][0]))
	}
	// At-least-once in the crash window between SMTP and commit
	// (docs/requests.md): a kill there may repeat that one email with the
	// same Message-ID; never more than one repeat per kill.
	require.LessOrEqual(t, dups, kills)
	t.Logf("%d kills, %d abandoned attempts, %d repeated emails (same Message-ID)", kills, abandoned, dups)
}

func TestTwoWorkerProcessesProcessEachRequestOnce(t *testing.T) {
	t.Parallel()
	const n = 500
	s := newSystem(t, n, func(c *config.Config) { c.Worker.Concurrency = 8 })
	s.start("serve")
	s.start("scheduler")
	second := freeAddr(t)
	s.start("worker")
	s.start("worker", "GDPR_WORKER_ADMIN_ADDR="+second)
	ids := s.submitAll(n)
	s.waitStates(ids, "completed", 120*time.Second)
	s.waitEmails(n)

	emails := s.emails()
	for i, id := range ids {
		require.Equal(t, 1, s.src.callsOf(subjectID(i)), "report of %s built once", id)
		require.Len(t, emails[id], 1, "one email for %s", id)
	}
	require.Equal(t, n, s.count(`SELECT count(*) FROM reports`))
	require.Equal(t, n, s.count(`SELECT count(*) FROM request_attempts`), "one attempt each")
	require.Len(t, s.storedFiles(), n)
	// Both processes did part of the work, and together built each report once.
	first, other := metric(t, s.admin["worker"], "gdpr_reports_generated_total"), metric(t, second, "gdpr_reports_generated_total")
	t.Logf("reports built: %v by the first worker, %v by the second", first, other)
	require.Positive(t, first)
	require.Positive(t, other)
	require.Equal(t, float64(n), first+other)
}
