package testkit

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
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
func StartMailpit(t testing.TB, extra ...string) *Mailpit {
	t.Helper()
	bin := mailpitBinary(t)
	smtpPort, httpPort := freePort(t), freePort(t)
	dir := t.TempDir()
	cmd := exec.Command(bin,
		"--smtp", "127.0.0.1:"+strconv.Itoa(smtpPort),
		"--listen", "127.0.0.1:"+strconv.Itoa(httpPort),
		"--database", filepath.Join(dir, "mailpit.db"),
		"--max", "100000", "--quiet", "--disable-version-check",
		"--smtp-auth-accept-any", "--smtp-disable-rdns")
	if !slices.Contains(extra, "--smtp-tls-cert") {
		// Plaintext AUTH is allowed only without TLS (mailpit refuses both).
		cmd.Args = append(cmd.Args, "--smtp-auth-allow-insecure")
	}
	cmd.Args = append(cmd.Args, extra...)
	cmd.Stdout, cmd.Stderr = t.Output(), t.Output()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, cmd.Start(), "starting mailpit")
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	m := &Mailpit{SMTPHost: "127.0.0.1", SMTPPort: smtpPort, APIURL: "http://127.0.0.1:" + strconv.Itoa(httpPort), PID: cmd.Process.Pid}
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("mailpit exited at start")
		default:
		}
		resp, err := http.Get(m.APIURL + "/api/v1/messages?limit=1")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				if c, err := net.Dial("tcp", net.JoinHostPort(m.SMTPHost, strconv.Itoa(smtpPort))); err == nil {
					_ = c.Close()
					return m
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("mailpit did not come up within 20s")
		}
		time.Sleep(20 * time.Millisecond) //nolint:forbidigo // the polling step of waiting for mailpit to answer
	}
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
