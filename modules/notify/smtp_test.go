package notify_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/notify"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns
// their paths and a pool trusting the certificate.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	kb, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600))
	return certFile, keyFile, pool
}

func TestSMTPTLSModesAndAuth(t *testing.T) {
	t.Parallel()
	certFile, keyFile, pool := selfSigned(t)
	cases := []struct {
		mode string
		flag string
	}{
		{"starttls", "--smtp-require-starttls"},
		{"tls", "--smtp-require-tls"},
	}
	for _, c := range cases {
		t.Run(c.mode, func(t *testing.T) {
			t.Parallel()
			mp := testkit.StartMailpit(t, "--smtp-tls-cert", certFile, "--smtp-tls-key", keyFile, c.flag)
			cfg := smtpConfig(mp)
			cfg.TLS = c.mode
			cfg.Username, cfg.Password = "gdpr", "secret"
			email := notify.Email{To: "tls@example.com", Subject: "s", Body: "b", MessageID: "m-" + c.mode + "@test.invalid"}

			plain := cfg
			plain.TLS = "none"
			plain.Timeout = time.Second // a TLS-only server never greets in plaintext
			require.Error(t, notify.NewSMTP(plain).Send(t.Context(), email), "the server refuses a plaintext conversation")
			require.Error(t, notify.NewSMTP(cfg).Send(t.Context(), email), "an untrusted certificate is refused")

			require.NoError(t, notify.NewSMTP(cfg, notify.WithRootCAs(pool)).Send(t.Context(), email))
			msgs, err := mp.Messages(t.Context())
			require.NoError(t, err)
			require.Len(t, msgs, 1)
			require.Equal(t, email.MessageID, msgs[0].MessageID)
		})
	}
}
