package notify_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/notify"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// tcpRelay forwards loopback connections to an SMTP server and counts them:
// how many were opened, how many are open now (and at most), and it can cut
// every open one, as a server that drops idle sessions does.
type tcpRelay struct {
	port     int
	accepted atomic.Int64
	open     atomic.Int64
	peak     atomic.Int64

	mu    sync.Mutex
	conns []net.Conn
}

func startRelay(t *testing.T, target string) *tcpRelay {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	r := &tcpRelay{port: l.Addr().(*net.TCPAddr).Port}
	go func() {
		for {
			client, err := l.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", target)
			if err != nil {
				_ = client.Close()
				continue
			}
			r.accepted.Add(1)
			n := r.open.Add(1)
			for {
				p := r.peak.Load()
				if n <= p || r.peak.CompareAndSwap(p, n) {
					break
				}
			}
			r.mu.Lock()
			r.conns = append(r.conns, client, server)
			r.mu.Unlock()
			var once sync.Once
			done := func() {
				once.Do(func() {
					_ = client.Close()
					_ = server.Close()
					r.open.Add(-1)
				})
			}
			go func() { _, _ = io.Copy(server, client); done() }()
			go func() { _, _ = io.Copy(client, server); done() }()
		}
	}()
	return r
}

// cut closes every connection the relay holds.
func (r *tcpRelay) cut() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.conns {
		_ = c.Close()
	}
	r.conns = nil
}

func relayConfig(t *testing.T, mp *testkit.Mailpit) (notify.Config, *tcpRelay) {
	r := startRelay(t, net.JoinHostPort(mp.SMTPHost, strconv.Itoa(mp.SMTPPort)))
	cfg := smtpConfig(mp)
	cfg.SMTPPort = r.port
	return cfg, r
}

func email(i int) notify.Email {
	return notify.Email{To: fmt.Sprintf("s%d@example.com", i), Subject: "s", Body: "b", MessageID: fmt.Sprintf("m%d@test.invalid", i)}
}

// requireReceived checks that Mailpit holds exactly the emails 0..n-1, once each.
func requireReceived(t *testing.T, mp *testkit.Mailpit, n int) {
	t.Helper()
	msgs, err := mp.Messages(t.Context())
	require.NoError(t, err)
	got := map[string]int{}
	for _, m := range msgs {
		got[m.MessageID]++
	}
	for i := range n {
		require.Equal(t, 1, got[email(i).MessageID], "email %d", i)
	}
	require.Len(t, msgs, n)
}

// TestSMTPSessionsAreReusedWithinTheirBound: 60 emails from 6 goroutines
// through a sender allowed 3 sessions open at a time travel over at most 3
// connections, never more than 3 at once, and each email arrives once.
func TestSMTPSessionsAreReusedWithinTheirBound(t *testing.T) {
	t.Parallel()
	mp := testkit.StartMailpit(t)
	cfg, relay := relayConfig(t, mp)
	cfg.Sessions = 3
	s := notify.NewSMTP(cfg)
	t.Cleanup(func() { _ = s.Close() })

	const senders, each = 6, 10
	var wg sync.WaitGroup
	errs := make(chan error, senders*each)
	for g := range senders {
		wg.Go(func() {
			for i := range each {
				errs <- s.Send(t.Context(), email(g*each+i))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	requireReceived(t, mp, senders*each)
	require.LessOrEqual(t, relay.peak.Load(), int64(3), "sessions open at once")
	require.LessOrEqual(t, relay.accepted.Load(), int64(3), "connections opened for 60 emails")
}

// TestSMTPSessionLimits: a session carries at most notify.session_messages
// emails, a broken idle session (the server or a middlebox closed it) is
// replaced without failing the send, idle sessions close after
// notify.session_idle, and Close ends the idle ones.
func TestSMTPSessionLimits(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		run  func(t *testing.T, mp *testkit.Mailpit, cfg notify.Config, relay *tcpRelay)
	}{
		{"messages per session", func(t *testing.T, mp *testkit.Mailpit, cfg notify.Config, relay *tcpRelay) {
			cfg.SessionMessages = 2
			s := notify.NewSMTP(cfg)
			t.Cleanup(func() { _ = s.Close() })
			for i := range 5 {
				require.NoError(t, s.Send(t.Context(), email(i)))
			}
			requireReceived(t, mp, 5)
			require.Equal(t, int64(3), relay.accepted.Load(), "2+2+1 emails")
		}},
		{"broken idle session", func(t *testing.T, mp *testkit.Mailpit, cfg notify.Config, relay *tcpRelay) {
			s := notify.NewSMTP(cfg)
			t.Cleanup(func() { _ = s.Close() })
			require.NoError(t, s.Send(t.Context(), email(0)))
			relay.cut()
			testkit.Eventually(t, 10*time.Second, func() bool { return relay.open.Load() == 0 }, "the relay closed the session")
			require.NoError(t, s.Send(t.Context(), email(1)), "a new session sends it")
			requireReceived(t, mp, 2)
			require.Equal(t, int64(2), relay.accepted.Load())
		}},
		{"idle close", func(t *testing.T, mp *testkit.Mailpit, cfg notify.Config, relay *tcpRelay) {
			cfg.SessionIdle = 200 * time.Millisecond
			s := notify.NewSMTP(cfg)
			t.Cleanup(func() { _ = s.Close() })
			require.NoError(t, s.Send(t.Context(), email(0)))
			testkit.Eventually(t, 10*time.Second, func() bool { return relay.open.Load() == 0 }, "the idle session was closed")
			require.NoError(t, s.Send(t.Context(), email(1)))
			requireReceived(t, mp, 2)
			require.Equal(t, int64(2), relay.accepted.Load())
		}},
		{"close", func(t *testing.T, mp *testkit.Mailpit, cfg notify.Config, relay *tcpRelay) {
			cfg.SessionIdle = time.Hour
			s := notify.NewSMTP(cfg)
			require.NoError(t, s.Send(t.Context(), email(0)))
			require.Equal(t, int64(1), relay.open.Load(), "the session stays open for the next email")
			require.NoError(t, s.Close())
			testkit.Eventually(t, 10*time.Second, func() bool { return relay.open.Load() == 0 }, "Close ended the idle session")
			requireReceived(t, mp, 1)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			mp := testkit.StartMailpit(t)
			cfg, relay := relayConfig(t, mp)
			c.run(t, mp, cfg, relay)
		})
	}
}

// TestSMTPSessionWaitIsBoundedByTheTimeout: with every session busy, a send
// waits for one no longer than notify.timeout, so notify.resend_after still
// bounds a send in progress.
func TestSMTPSessionWaitIsBoundedByTheTimeout(t *testing.T) {
	t.Parallel()
	// A server that accepts and never greets holds the only session.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { _ = c.Close() })
		}
	}()
	cfg := notify.DefaultConfig()
	cfg.SMTPPort = l.Addr().(*net.TCPAddr).Port
	cfg.Sessions = 1
	cfg.Timeout = 300 * time.Millisecond
	s := notify.NewSMTP(cfg)
	first := make(chan error, 1)
	go func() { first <- s.Send(t.Context(), email(0)) }()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	require.Error(t, s.Send(ctx, email(1)))
	require.NoError(t, ctx.Err(), "the waiting send gave up on its own timeout")
	require.Error(t, <-first)
}
