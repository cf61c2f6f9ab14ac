package health

import (
	"net"
	"net/http"
	"time"

	"golang.org/x/net/netutil"
)

// Limits bound what one client can hold of an HTTP server: how long it may
// take to send a request, to read the answer, and to keep an idle
// connection, and how many connections the server serves at once. A
// client that trickles a request therefore holds its connection for at
// most ReadTimeout, and a flood of such clients holds at most MaxConns
// descriptors (docs/api.md, "Limits").
type Limits struct {
	// ReadHeaderTimeout bounds reading a request's headers.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing an answer; a streaming handler extends
	// its own deadline while the client keeps reading.
	WriteTimeout time.Duration
	// IdleTimeout bounds a kept-alive connection waiting for its next request.
	IdleTimeout time.Duration
	// MaxConns caps the connections served at once; the next ones wait in
	// the listen backlog until one closes. 0 means no cap.
	MaxConns int
}

// DefaultLimits are the limits a server gets when none are configured.
func DefaultLimits() Limits {
	return Limits{
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxConns:          1024,
	}
}

// withDefaults fills every zero timeout from DefaultLimits; MaxConns stays
// as given.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.ReadHeaderTimeout <= 0 {
		l.ReadHeaderTimeout = d.ReadHeaderTimeout
	}
	if l.ReadTimeout <= 0 {
		l.ReadTimeout = d.ReadTimeout
	}
	if l.WriteTimeout <= 0 {
		l.WriteTimeout = d.WriteTimeout
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = d.IdleTimeout
	}
	return l
}

// Server returns an http.Server for h with these limits' timeouts; zero
// ones are the defaults.
func (l Limits) Server(h http.Handler) *http.Server {
	l = l.withDefaults()
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		WriteTimeout:      l.WriteTimeout,
		IdleTimeout:       l.IdleTimeout,
	}
}

// Listener caps ln at MaxConns connections served at once.
func (l Limits) Listener(ln net.Listener) net.Listener {
	if l.MaxConns <= 0 {
		return ln
	}
	return netutil.LimitListener(ln, l.MaxConns)
}
