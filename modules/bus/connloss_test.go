package bus_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// publishStream publishes fresh messages from several goroutines until
// stopped, remembering which were confirmed and how long the slowest call took.
type publishStream struct {
	pub *bus.Publisher

	mu        sync.Mutex
	confirmed []string
	failures  int
	slowest   time.Duration
	badErrs   []error

	stop chan struct{}
	wg   sync.WaitGroup
}

func startPublishing(t *testing.T, pub *bus.Publisher, goroutines int) *publishStream {
	s := &publishStream{pub: pub, stop: make(chan struct{})}
	for range goroutines {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			for {
				select {
				case <-s.stop:
					return
				default:
				}
				m := newMessage(t, "thing.streamed")
				start := time.Now()
				err := pub.Publish(context.Background(), m)
				s.record(m.ID, time.Since(start), err)
			}
		}()
	}
	return s
}

func (s *publishStream) record(id string, took time.Duration, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.slowest = max(s.slowest, took)
	switch {
	case err == nil:
		s.confirmed = append(s.confirmed, id)
	case errors.Is(err, bus.ErrUnconfirmed), errors.Is(err, bus.ErrNotConnected):
		s.failures++
	default:
		s.badErrs = append(s.badErrs, err)
	}
}

func (s *publishStream) confirmedCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.confirmed)
}

func (s *publishStream) finish() {
	close(s.stop)
	s.wg.Wait()
}

func TestConnectionLossDuringConfirmedPublishesLosesNothing(t *testing.T) {
	t.Parallel()
	cfg := testkit.AMQP(t)
	cfg.ConfirmTimeout = 2 * time.Second
	conn := dial(t, cfg, oneQueue)
	pub := bus.NewPublisher(conn)
	defer pub.Close()
	rec := newRecorder()
	consume(t, conn, bus.ConsumerOptions{Concurrency: 8}, func(_ context.Context, m message.Message) error {
		rec.add(m)
		return nil
	})

	s := startPublishing(t, pub, 8)
	const between = 200
	for round := range 2 {
		before := s.confirmedCount()
		testkit.Eventually(t, 30*time.Second, func() bool { return s.confirmedCount() >= before+between },
			"publishing resumes (round %d)", round)
		// Only this test's connection carries its unique prefix in its name.
		require.Positive(t, testkit.CloseRabbitConnections(t, cfg.Prefix), "this test's connection was found")
	}
	before := s.confirmedCount()
	testkit.Eventually(t, 30*time.Second, func() bool { return s.confirmedCount() >= before+between },
		"publishing resumes after the last loss without a restart")
	s.finish()

	require.Empty(t, s.badErrs, "publish errors are ErrUnconfirmed or ErrNotConnected")
	require.GreaterOrEqual(t, len(s.confirmed), 3*between)
	require.LessOrEqual(t, s.slowest, cfg.ConfirmTimeout+time.Second, "no publish waits past the confirm timeout")
	testkit.Eventually(t, 30*time.Second, func() bool {
		for _, id := range s.confirmed {
			if !rec.seen(id) {
				return false
			}
		}
		return true
	}, "every confirmed message is consumed")
	t.Logf("confirmed %d, failed during the losses %d, slowest publish %s, deliveries %d",
		len(s.confirmed), s.failures, s.slowest, rec.count())
}

// stallProxy forwards TCP to the broker and can stop forwarding without
// closing anything: a broker that stopped answering, from the client's view.
type stallProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cond   *sync.Cond
	paused bool
	conns  []net.Conn
}

func newStallProxy(t *testing.T, target string) *stallProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &stallProxy{ln: ln, target: target}
	p.cond = sync.NewCond(&p.mu)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *stallProxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = client.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, client, server)
		p.mu.Unlock()
		go p.pipe(server, client)
		go p.pipe(client, server)
	}
}

func (p *stallProxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			for p.paused {
				p.cond.Wait()
			}
			p.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				_ = src.Close()
			}
			return
		}
	}
}

func (p *stallProxy) setPaused(paused bool) {
	p.mu.Lock()
	p.paused = paused
	p.mu.Unlock()
	p.cond.Broadcast()
}

func (p *stallProxy) close() {
	_ = p.ln.Close()
	p.setPaused(false)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		_ = c.Close()
	}
}

func TestPublishToStalledBrokerFailsWithinConfirmTimeout(t *testing.T) {
	t.Parallel()
	cfg := testkit.AMQP(t)
	u, err := url.Parse(cfg.URL)
	require.NoError(t, err)
	proxy := newStallProxy(t, u.Host)
	viaProxy := *u
	viaProxy.Host = proxy.ln.Addr().String()
	proxied := cfg
	proxied.URL = viaProxy.String()
	proxied.ConfirmTimeout = time.Second

	conn := dial(t, proxied, oneQueue)
	pub := bus.NewPublisher(conn)
	defer pub.Close()
	require.NoError(t, pub.Publish(t.Context(), newMessage(t, "thing.before")))

	proxy.setPaused(true)
	const callers = 64
	errs := make([]error, callers)
	took := make([]time.Duration, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			errs[i] = pub.Publish(context.Background(), newMessage(t, "thing.during"))
			took[i] = time.Since(start)
		}()
	}
	wg.Wait()
	for i := range callers {
		require.True(t, errors.Is(errs[i], bus.ErrUnconfirmed) || errors.Is(errs[i], bus.ErrNotConnected), "caller %d: %v", i, errs[i])
		require.Less(t, took[i], proxied.ConfirmTimeout+time.Second, "caller %d waited too long", i)
	}

	proxy.setPaused(false)
	var resumed atomic.Bool
	testkit.Eventually(t, 30*time.Second, func() bool {
		if pub.Publish(t.Context(), newMessage(t, "thing.after")) == nil {
			resumed.Store(true)
		}
		return resumed.Load()
	}, "publishing works again once the broker answers")
}

// TestConsumerResumesPromptlyWhileARetryWaits: a message waiting out a long
// retry backoff must not hold the consumer back from resubscribing after a
// connection loss.
func TestConsumerResumesPromptlyWhileARetryWaits(t *testing.T) {
	t.Parallel()
	cfg := testkit.AMQP(t)
	conn := dial(t, cfg, oneQueue)
	pub := bus.NewPublisher(conn)
	defer pub.Close()

	failing := make(chan message.Message, 10)
	handled := make(chan message.Message, 10)
	// A 60s backoff is capped at 30s and jittered to at least 15s.
	consume(t, conn, bus.ConsumerOptions{RetryBackoff: time.Minute}, func(_ context.Context, m message.Message) error {
		if m.Type == "thing.failing" {
			failing <- m
			return errors.New("try again later")
		}
		handled <- m
		return nil
	})
	require.NoError(t, pub.Publish(t.Context(), newMessage(t, "thing.failing")))
	select {
	case <-failing:
	case <-time.After(10 * time.Second):
		t.Fatal("first delivery missing")
	}

	start := time.Now()
	require.Positive(t, testkit.CloseRabbitConnections(t, cfg.Prefix))
	require.NoError(t, pub.Publish(t.Context(), newMessage(t, "thing.ok")))
	select {
	case <-handled:
	case <-time.After(12 * time.Second):
		t.Fatal("the consumer did not resume while a retry was waiting")
	}
	select {
	case m := <-failing:
		require.True(t, m.Redelivered, "the waiting message came back with the new subscription")
	case <-time.After(12 * time.Second):
		t.Fatal("the waiting message was not redelivered after the reconnect")
	}
	t.Logf("resumed %s after the close began", time.Since(start))
}
