package adminui

import (
	"crypto/tls"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSecureCookieFollowsThePublicURLNotTheClient: Secure comes from
// serve.public_url or TLS served here, never from a header a client sends.
func TestSecureCookieFollowsThePublicURLNotTheClient(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, publicURL, forwardedProto string
		tls, want                       bool
	}{
		{name: "http, plain", publicURL: "http://127.0.0.1:8080"},
		{name: "http, forged X-Forwarded-Proto", publicURL: "http://127.0.0.1:8080", forwardedProto: "https"},
		{name: "https behind a proxy", publicURL: "https://privacy.example.com", want: true},
		{name: "HTTPS in capitals", publicURL: "HTTPS://privacy.example.com", want: true},
		{name: "TLS served here", publicURL: "http://127.0.0.1:8080", tls: true, want: true},
		{name: "unparsable public_url", publicURL: "://", forwardedProto: "https"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := &Console{httpsOnly: isHTTPS(tc.publicURL)}
			r := httptest.NewRequest("POST", "/admin/signin", nil)
			if tc.forwardedProto != "" {
				r.Header.Set("X-Forwarded-Proto", tc.forwardedProto)
			}
			if tc.tls {
				r.TLS = &tls.ConnectionState{}
			}
			require.Equal(t, tc.want, c.secure(r))
		})
	}
}
