package kafka_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/hookstream/hookstream/pkg/kafka"
)

func TestConfigValidateTLSAndSASL(t *testing.T) {
	tests := []struct {
		name string
		edit func(c *kafka.Config)
		// wantErrs are substrings of the error a user sees; none for valid.
		wantErrs []string
	}{
		{name: "SCRAM-SHA-512 with user and password", edit: func(c *kafka.Config) {
			c.SASL = kafka.SASLConfig{Mechanism: "SCRAM-SHA-512", Username: "hookstream", Password: "s3cret"}
		}},
		{name: "mechanism in lower case", edit: func(c *kafka.Config) {
			c.SASL = kafka.SASLConfig{Mechanism: "plain", Username: "hookstream", Password: "s3cret"}
		}},
		{name: "TLS with every file", edit: func(c *kafka.Config) {
			c.TLS = kafka.TLSConfig{Enabled: true, CAFile: "/ca.pem", CertFile: "/tls.crt", KeyFile: "/tls.key", ServerName: "kafka.example.com"}
		}},
		{
			name:     "unknown mechanism",
			edit:     func(c *kafka.Config) { c.SASL = kafka.SASLConfig{Mechanism: "GSSAPI", Username: "u", Password: "p"} },
			wantErrs: []string{`kafka.sasl.mechanism: must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, got "GSSAPI"`},
		},
		{
			name:     "mechanism without username",
			edit:     func(c *kafka.Config) { c.SASL = kafka.SASLConfig{Mechanism: "PLAIN", Password: "p"} },
			wantErrs: []string{"kafka.sasl.username: required with a SASL mechanism"},
		},
		{
			name:     "mechanism without password",
			edit:     func(c *kafka.Config) { c.SASL = kafka.SASLConfig{Mechanism: "SCRAM-SHA-256", Username: "u"} },
			wantErrs: []string{"kafka.sasl.password: required with a SASL mechanism"},
		},
		{
			name:     "client certificate without key",
			edit:     func(c *kafka.Config) { c.TLS = kafka.TLSConfig{Enabled: true, CertFile: "/tls.crt"} },
			wantErrs: []string{"kafka.tls: cert_file and key_file go together"},
		},
		{
			name:     "CA file without TLS enabled",
			edit:     func(c *kafka.Config) { c.TLS = kafka.TLSConfig{CAFile: "/ca.pem"} },
			wantErrs: []string{"kafka.tls.ca_file: set, but kafka.tls.enabled is false (set it to connect over TLS)"},
		},
		{
			name: "client certificate without TLS enabled",
			edit: func(c *kafka.Config) { c.TLS = kafka.TLSConfig{CertFile: "/tls.crt", KeyFile: "/tls.key"} },
			wantErrs: []string{
				"kafka.tls.cert_file: set, but kafka.tls.enabled is false",
				"kafka.tls.key_file: set, but kafka.tls.enabled is false",
			},
		},
		{
			name: "server name and skip-verify without TLS enabled",
			edit: func(c *kafka.Config) {
				c.TLS = kafka.TLSConfig{ServerName: "kafka.example.com", InsecureSkipVerify: true}
			},
			wantErrs: []string{
				"kafka.tls.server_name: set, but kafka.tls.enabled is false",
				"kafka.tls.insecure_skip_verify: set, but kafka.tls.enabled is false",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := defaultConfig()
			tt.edit(&cfg)
			err := cfg.Validate()
			if len(tt.wantErrs) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tt.wantErrs)
			}
			for _, want := range tt.wantErrs {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error = %v, want it to contain %q", err, want)
				}
			}
		})
	}
}

// The TLS files are read when a client is made; a missing or empty one
// fails NewClient with its path.
func TestNewClientReportsBadTLSFiles(t *testing.T) {
	pki := newTestPKI(t)
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(empty, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	tests := []struct {
		name    string
		tls     kafka.TLSConfig
		wantErr string
	}{
		{name: "CA file missing", tls: kafka.TLSConfig{Enabled: true, CAFile: missing}, wantErr: "kafka tls ca: open " + missing + ": no such file or directory"},
		{name: "CA file without a certificate", tls: kafka.TLSConfig{Enabled: true, CAFile: empty}, wantErr: "kafka tls ca " + empty + ": no certificate found"},
		{name: "client key missing", tls: kafka.TLSConfig{Enabled: true, CAFile: pki.caFile, CertFile: pki.clientCert, KeyFile: missing}, wantErr: "kafka tls client certificate: open " + missing + ": no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := defaultConfig()
			cfg.TLS = tt.tls
			if err := cfg.Validate(); err != nil {
				t.Fatalf("Validate: %v (files are checked by NewClient)", err)
			}
			cl, err := kafka.NewClient(cfg, quiet(), "test")
			if err == nil {
				cl.Close()
				t.Fatalf("NewClient succeeded, want %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

// pingWithConfig makes a client for cfg and asks a broker for its API
// versions, which needs a finished TLS handshake and SASL authentication.
func pingWithConfig(t *testing.T, cfg kafka.Config) error {
	t.Helper()
	cl, err := kafka.NewClient(cfg, quiet(), "test")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return cl.Ping(ctx)
}

func TestSASLMechanisms(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(),
		kfake.Superuser("PLAIN", "plain-user", "plain-pass"),
		kfake.Superuser("SCRAM-SHA-256", "scram256-user", "scram256-pass"),
		kfake.Superuser("SCRAM-SHA-512", "scram512-user", "scram512-pass"),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	// kfake closes the connection on bad credentials, so the client sees
	// EOF; a real broker answers SASL_AUTHENTICATION_FAILED with a reason.
	const refused = "EOF"
	tests := []struct {
		name    string
		sasl    kafka.SASLConfig
		wantErr string // "" when the client must get through
	}{
		{name: "PLAIN", sasl: kafka.SASLConfig{Mechanism: "PLAIN", Username: "plain-user", Password: "plain-pass"}},
		{name: "SCRAM-SHA-256", sasl: kafka.SASLConfig{Mechanism: "SCRAM-SHA-256", Username: "scram256-user", Password: "scram256-pass"}},
		{name: "SCRAM-SHA-512 in lower case", sasl: kafka.SASLConfig{Mechanism: "scram-sha-512", Username: "scram512-user", Password: "scram512-pass"}},
		{name: "PLAIN wrong password", sasl: kafka.SASLConfig{Mechanism: "PLAIN", Username: "plain-user", Password: "wrong"}, wantErr: refused},
		{name: "SCRAM-SHA-256 wrong password", sasl: kafka.SASLConfig{Mechanism: "SCRAM-SHA-256", Username: "scram256-user", Password: "wrong"}, wantErr: refused},
		{name: "SCRAM-SHA-512 unknown user", sasl: kafka.SASLConfig{Mechanism: "SCRAM-SHA-512", Username: "nobody", Password: "scram512-pass"}, wantErr: refused},
		{name: "SCRAM-SHA-512 with a SCRAM-SHA-256 user", sasl: kafka.SASLConfig{Mechanism: "SCRAM-SHA-512", Username: "scram256-user", Password: "scram256-pass"}, wantErr: refused},
		{name: "PLAIN with a SCRAM user", sasl: kafka.SASLConfig{Mechanism: "PLAIN", Username: "scram512-user", Password: "scram512-pass"}, wantErr: refused},
		{name: "no SASL", wantErr: "SASL is required but not provided: is SASL missing?"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := defaultConfig()
			cfg.Brokers = c.ListenAddrs()
			cfg.SASL = tt.sasl
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			err := pingWithConfig(t, cfg)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ping with the right credentials: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ping error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestTLS(t *testing.T) {
	pki := newTestPKI(t)
	serverCert, err := tls.LoadX509KeyPair(pki.serverCert, pki.serverKey)
	if err != nil {
		t.Fatal(err)
	}
	start := func(clientAuth tls.ClientAuthType) []string {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(&tls.Config{
			Certificates: []tls.Certificate{serverCert},
			ClientCAs:    pki.pool,
			ClientAuth:   clientAuth,
			MinVersion:   tls.VersionTLS12,
		}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c.ListenAddrs()
	}
	oneWay := start(tls.NoClientCert)
	mutual := start(tls.RequireAndVerifyClientCert)
	tests := []struct {
		name    string
		brokers []string
		tls     kafka.TLSConfig
		wantErr string // "" when the client must get through
	}{
		{name: "CA configured", brokers: oneWay, tls: kafka.TLSConfig{Enabled: true, CAFile: pki.caFile}},
		{name: "system CAs only", brokers: oneWay, tls: kafka.TLSConfig{Enabled: true}, wantErr: "certificate signed by unknown authority"},
		{name: "server name that the certificate does not name", brokers: oneWay, tls: kafka.TLSConfig{Enabled: true, CAFile: pki.caFile, ServerName: "kafka.example.com"}, wantErr: "kafka.example.com"},
		{name: "verification skipped", brokers: oneWay, tls: kafka.TLSConfig{Enabled: true, InsecureSkipVerify: true}},
		{name: "mutual TLS with a client certificate", brokers: mutual, tls: kafka.TLSConfig{Enabled: true, CAFile: pki.caFile, CertFile: pki.clientCert, KeyFile: pki.clientKey}},
		{name: "mutual TLS without a client certificate", brokers: mutual, tls: kafka.TLSConfig{Enabled: true, CAFile: pki.caFile}, wantErr: "certificate required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := defaultConfig()
			cfg.Brokers = tt.brokers
			cfg.TLS = tt.tls
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			err := pingWithConfig(t, cfg)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ping: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ping error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

// testPKI is a CA with a server certificate for 127.0.0.1 and a client
// certificate, written as PEM files.
type testPKI struct {
	pool                                                 *x509.CertPool
	caFile, serverCert, serverKey, clientCert, clientKey string
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	now := time.Now()
	caKey := newKey()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "hookstream test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	leaf := func(serial int64, name string, usage x509.ExtKeyUsage, ips []net.IP) (certFile, keyFile string) {
		k := newKey()
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: name},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  ips,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return write(name+".crt", "CERTIFICATE", der), write(name+".key", "PRIVATE KEY", kder)
	}
	p := testPKI{pool: x509.NewCertPool(), caFile: write("ca.crt", "CERTIFICATE", caDER)}
	p.pool.AddCert(ca)
	p.serverCert, p.serverKey = leaf(2, "broker", x509.ExtKeyUsageServerAuth, []net.IP{net.IPv4(127, 0, 0, 1)})
	p.clientCert, p.clientKey = leaf(3, "hookstream", x509.ExtKeyUsageClientAuth, nil)
	return p
}
