package testkit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Mailpit is a real SMTP server started for one test.
type Mailpit struct {
	// SMTPHost and SMTPPort receive mail; APIURL is the HTTP API's base URL.
	SMTPHost string
	SMTPPort int
	APIURL   string
	// PID is the server's process id (benchmarks read its CPU time).
	PID int

	t      testing.TB
	cmd    *exec.Cmd
	args   []string
	dbPath string
	exited chan struct{}
}

// MailpitMessage is one captured email as Mailpit's API lists it.
type MailpitMessage struct {
	ID        string `json:"ID"`
	MessageID string `json:"MessageID"`
	Subject   string `json:"Subject"`
	To        []struct {
		Address string `json:"Address"`
	} `json:"To"`
}

// StartMailpit starts Mailpit on free loopback ports with its own database
// and stops it when t ends. extra are more mailpit flags (e.g. TLS).
//
// A port found free can be taken by a parallel test before Mailpit binds it
// (mailpit then exits with "address already in use"), so a start that exits
// is tried again on fresh ports; the API's database path proves the answering
// server is this test's own and not a neighbour that holds the port.
func StartMailpit(t testing.TB, extra ...string) *Mailpit {
	t.Helper()
	bin := mailpitBinary(t)
	for attempt := 1; ; attempt++ {
		m, err := startMailpit(t, bin, extra)
		if err == nil {
			return m
		}
		if attempt == 5 {
			t.Fatalf("starting mailpit: %v (after %d attempts)", err, attempt)
		}
		t.Logf("starting mailpit again on fresh ports: %v", err)
	}
}

func startMailpit(t testing.TB, bin string, extra []string) (*Mailpit, error) {
	smtpPort, httpPort := freePort(t), freePort(t)
	dbPath := filepath.Join(t.TempDir(), "mailpit.db")
	args := []string{
		"--smtp", "127.0.0.1:" + strconv.Itoa(smtpPort),
		"--listen", "127.0.0.1:" + strconv.Itoa(httpPort),
		"--database", dbPath,
		"--max", "100000", "--quiet", "--disable-version-check",
		"--smtp-auth-accept-any", "--smtp-disable-rdns",
	}
	if !slices.Contains(extra, "--smtp-tls-cert") {
		// Plaintext AUTH is allowed only without TLS (mailpit refuses both).
		args = append(args, "--smtp-auth-allow-insecure")
	}
	args = append(args, extra...)
	m := &Mailpit{
		SMTPHost: "127.0.0.1", SMTPPort: smtpPort, APIURL: "http://127.0.0.1:" + strconv.Itoa(httpPort),
		t: t, args: append([]string{bin}, args...), dbPath: dbPath,
	}
	return m, m.spawn()
}

// spawn runs the server with m's arguments and waits until it answers.
func (m *Mailpit) spawn() error {
	cmd := exec.Command(m.args[0], m.args[1:]...)
	cmd.Stdout, cmd.Stderr = m.t.Output(), m.t.Output()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("running %s: %w", m.args[0], err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	m.cmd, m.exited, m.PID = cmd, exited, cmd.Process.Pid
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-exited:
			return errors.New("mailpit exited at start")
		default:
		}
		if m.ownsPorts(m.dbPath) {
			m.t.Cleanup(stop)
			return nil
		}
		if time.Now().After(deadline) {
			stop()
			return errors.New("mailpit did not come up within 20s")
		}
		time.Sleep(20 * time.Millisecond) //nolint:forbidigo // the polling step of waiting for mailpit to answer
	}
}

// Kill ends the server with SIGKILL, mid-conversation for any client, and
// waits for it to exit; Restart brings it back.
func (m *Mailpit) Kill() {
	m.t.Helper()
	require.NoError(m.t, m.cmd.Process.Kill())
	<-m.exited
}

// Restart starts a killed server again on the same ports with the same
// database, so the emails it captured before are still listed.
func (m *Mailpit) Restart() {
	m.t.Helper()
	require.NoError(m.t, m.spawn(), "restarting mailpit on its ports")
}

// ownsPorts reports whether the HTTP port is served by the Mailpit that
// uses dbPath and the SMTP port is a listening socket of that process.
func (m *Mailpit) ownsPorts(dbPath string) bool {
	resp, err := http.Get(m.APIURL + "/api/v1/info")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var info struct {
		Database string `json:"Database"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&info) != nil || info.Database != dbPath {
		return false
	}
	return listens(m.PID, m.SMTPPort)
}

// listens reports whether process pid holds a TCP socket listening on port,
// from /proc: the socket inodes of the port's LISTEN rows in /proc/net/tcp
// against the process's open file descriptors.
func listens(pid, port int) bool {
	inodes := map[string]bool{}
	suffix := fmt.Sprintf(":%04X", port)
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(table)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) > 9 && strings.HasSuffix(f[1], suffix) && f[3] == "0A" {
				inodes["socket:["+f[9]+"]"] = true
			}
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return false
	}
	for _, fd := range fds {
		if target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && inodes[target] {
			return true
		}
	}
	return false
}

func mailpitBinary(t testing.TB) string {
	if p, err := exec.LookPath("mailpit"); err == nil {
		return p
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
			gopath = string(out[:len(out)-1])
		}
	}
	p := filepath.Join(gopath, "bin", "mailpit")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("mailpit not found on PATH or in %s: run `make tools` (go install github.com/axllent/mailpit@latest)", p)
	}
	return p
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Messages lists every captured email.
func (m *Mailpit) Messages(ctx context.Context) ([]MailpitMessage, error) {
	var all []MailpitMessage
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet,
			fmt.Sprintf("%s/api/v1/messages?start=%d&limit=1000", m.APIURL, len(all)), nil)
		if err != nil {
			return nil, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, fmt.Errorf("listing mailpit messages: %w", err)
		}
		var page struct {
			Total    int              `json:"total"`
			Messages []MailpitMessage `json:"messages"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		_ = resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("decoding mailpit messages: %w", err)
		}
		all = append(all, page.Messages...)
		if len(page.Messages) == 0 || len(all) >= page.Total {
			return all, nil
		}
	}
}

// Count returns how many emails Mailpit captured.
func (m *Mailpit) Count(ctx context.Context) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.APIURL+"/api/v1/messages?limit=1", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("counting mailpit messages: %w", err)
	}
	defer resp.Body.Close()
	var page struct {
		Total int `json:"total"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		return 0, fmt.Errorf("decoding mailpit count: %w", err)
	}
	return page.Total, nil
}

// Raw returns the source of the captured email with Mailpit id id.
func (m *Mailpit) Raw(ctx context.Context, id string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.APIURL+"/api/v1/message/"+id+"/raw", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reading mailpit message: %w", err)
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}
