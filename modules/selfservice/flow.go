package selfservice

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Verification outcomes a caller maps to pages with errors.Is.
var (
	// ErrWrongCode: the code is not the one sent; errors.As gives the tries left.
	ErrWrongCode = errors.New("selfservice: wrong code")
	// ErrVoid: too many wrong codes; the verification is gone.
	ErrVoid = errors.New("selfservice: too many wrong codes")
	// ErrExpired: the code or link is older than privacy.code_ttl.
	ErrExpired = errors.New("selfservice: verification expired")
	// ErrGone: no such verification: never started, used, voided or expired
	// long ago; also a link or token that is forged or expired.
	ErrGone = errors.New("selfservice: link or verification no longer valid")
	// ErrLocked: this address's wrong codes, summed over all its
	// verifications, reached privacy.code_failures_per_email in one
	// privacy.code_failure_window; even the right code is refused until
	// the window ends. errors.Is(err, ErrVoid) holds too: the page is the
	// same.
	ErrLocked error = lockedError{}
	// ErrWithdrawn: the status link's request was cancelled by an operator
	// (withdrawn): nothing more is done for it, and its link shows the
	// page saying so. errors.Is(err, ErrGone) holds too.
	ErrWithdrawn error = withdrawnError{}
	// ErrUnavailable: Redis or the account lookup did not answer; nothing
	// changed, and a verified code can be confirmed again.
	ErrUnavailable = errors.New("selfservice: temporarily unavailable")
)

type withdrawnError struct{}

func (withdrawnError) Error() string { return "selfservice: the request was withdrawn" }

// Is makes errors.Is(err, ErrGone) hold: the link no longer works.
func (withdrawnError) Is(target error) bool { return target == ErrGone }

type lockedError struct{}

func (lockedError) Error() string {
	return "selfservice: too many wrong codes for this address in privacy.code_failure_window"
}

// Is makes errors.Is(err, ErrVoid) hold: the page asks to start again.
func (lockedError) Is(target error) bool { return target == ErrVoid }

// WrongCodeError carries how many tries are left after a wrong code.
type WrongCodeError struct{ TriesLeft int }

func (e *WrongCodeError) Error() string {
	return "selfservice: wrong code, " + strconv.Itoa(e.TriesLeft) + " tries left"
}

// Is makes errors.Is(err, ErrWrongCode) hold.
func (e *WrongCodeError) Is(target error) bool { return target == ErrWrongCode }

// MAC domains: every token and digest this package makes names its purpose,
// so that one made for a purpose is refused for every other although one
// key (serve.download_key) signs them all.
const (
	scopeCode   = "gdpr-privacy-code-v1"
	scopeLink   = "gdpr-privacy-link-v1"
	scopeStatus = "gdpr-request-status-v1"
	scopeEmail  = "gdpr-privacy-ratelimit-v1"
	scopeAddr   = "gdpr-privacy-ratelimit-addr-v1"
	scopeFail   = "gdpr-privacy-code-failures-v1"
)

// flowData is what a verification remembers until it is used. The address
// is personal data; it lives in Redis no longer than privacy.code_ttl.
type flowData struct {
	Type, Email, Locale string
}

// checkScript verifies a code (ARGV[1], its MAC; "" for a link whose
// signature the caller checked) at ARGV[2] (unix ms) against at most ARGV[3]
// tries. A wrong code counts a try; the last wrong one deletes the flow, so
// the next try finds nothing even with the right code. An expired flow is
// deleted. A code is also a guess at the address's code: KEYS[2] counts
// the address's wrong codes over all its flows in a fixed window (ARGV[5]
// ms), and at ARGV[4] of them every code of the address is refused, the
// right one too, until the window ends (so 6 digits are not guessed by
// starting verifications over and over). A signed link is not a guess and
// is not held back. The answer is {outcome, ...}: ok with the flow's
// fields, wrong with the tries left.
const checkScript = `
if redis.call('EXISTS', KEYS[1]) == 0 then return {'gone'} end
local f = redis.call('HMGET', KEYS[1], 'h', 'x', 'k', 'e', 'l')
if tonumber(ARGV[2]) >= tonumber(f[2]) then
  redis.call('DEL', KEYS[1])
  return {'expired'}
end
if ARGV[1] == '' then
  return {'ok', f[3], f[4], f[5]}
end
if tonumber(redis.call('GET', KEYS[2]) or '0') >= tonumber(ARGV[4]) then
  redis.call('DEL', KEYS[1])
  return {'locked'}
end
if f[1] == ARGV[1] then
  return {'ok', f[3], f[4], f[5]}
end
if redis.call('INCR', KEYS[2]) == 1 then redis.call('PEXPIRE', KEYS[2], ARGV[5]) end
local t = redis.call('HINCRBY', KEYS[1], 't', 1)
local left = tonumber(ARGV[3]) - t
if left <= 0 then
  redis.call('DEL', KEYS[1])
  return {'void'}
end
return {'wrong', tostring(left)}
`

// rateScript counts one send in a fixed window and says whether it is
// within limit ARGV[1]; the window's key expires with it (ARGV[2] ms).
const rateScript = `
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if n > tonumber(ARGV[1]) then return 0 end
return 1
`

type flows struct {
	rdb    redis.UniversalClient
	prefix string
	key    []byte
	check  *redis.Script
	rate   *redis.Script
}

func (f *flows) flowKey(id string) string { return f.prefix + "flow:" + id }

func (f *flows) codeMAC(flow, code string) string {
	h := hmac.New(sha256.New, f.key)
	h.Write([]byte(scopeCode + "\n" + flow + "\n" + code))
	return hex.EncodeToString(h.Sum(nil))
}

// newFlowID is 128 random bits: the handle of one verification, shown to
// whoever started it. It proves nothing by itself; the code or link does.
func newFlowID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("making a verification id: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func newCode() (string, error) {
	n, err := rand.Int(rand.Reader, big.NewInt(1_000_000))
	if err != nil {
		return "", fmt.Errorf("making a verification code: %w", err)
	}
	return fmt.Sprintf("%06d", n.Int64()), nil
}

// store remembers a new verification with the code's MAC (never the code).
// Redis expires it a minute after its end; the stored end, compared with
// the service's clock, is what decides.
func (f *flows) store(ctx context.Context, id, code string, d flowData, expires time.Time, ttl time.Duration) error {
	key := f.flowKey(id)
	pipe := f.rdb.TxPipeline()
	pipe.HSet(ctx, key, "h", f.codeMAC(id, code), "t", 0, "x", expires.UnixMilli(),
		"k", d.Type, "e", d.Email, "l", d.Locale)
	pipe.PExpire(ctx, key, ttl+time.Minute)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("%w: storing a verification: %w", ErrUnavailable, err)
	}
	return nil
}

// guessLimit bounds wrong codes per address over all its verifications:
// at most limit in each window.
type guessLimit struct {
	limit  int
	window time.Duration
}

// verify checks code ("" when a signed link was checked) and returns the
// flow's data; the flow stays until done deletes it, so that a submission
// that failed can be confirmed again.
func (f *flows) verify(ctx context.Context, id, code string, now time.Time, tries int, guesses guessLimit) (flowData, error) {
	mac := ""
	if code != "" {
		mac = f.codeMAC(id, code)
	}
	// The address's failure counter is named by a digest of the flow's
	// address, read first: a script must be given every key it touches.
	email, err := f.rdb.HGet(ctx, f.flowKey(id), "e").Result()
	switch {
	case errors.Is(err, redis.Nil):
		return flowData{}, ErrGone
	case err != nil:
		return flowData{}, fmt.Errorf("%w: checking a verification: %w", ErrUnavailable, err)
	}
	digest := f.digest(scopeFail, strings.ToLower(email))
	slot := now.UnixMilli() / guesses.window.Milliseconds()
	failures := f.prefix + "rate:codefail:" + digest + ":" + strconv.FormatInt(slot, 10)
	res, err := f.check.Run(ctx, f.rdb, []string{f.flowKey(id), failures}, mac, now.UnixMilli(), tries,
		guesses.limit, guesses.window.Milliseconds()).StringSlice()
	if err != nil {
		return flowData{}, fmt.Errorf("%w: checking a verification: %w", ErrUnavailable, err)
	}
	switch res[0] {
	case "ok":
		return flowData{Type: res[1], Email: res[2], Locale: res[3]}, nil
	case "wrong":
		left, _ := strconv.Atoi(res[1])
		return flowData{}, &WrongCodeError{TriesLeft: left}
	case "void":
		return flowData{}, ErrVoid
	case "locked":
		return flowData{}, ErrLocked
	case "expired":
		return flowData{}, ErrExpired
	}
	return flowData{}, ErrGone
}

// done deletes a used verification: its link and code never work again.
func (f *flows) done(ctx context.Context, id string) error {
	return f.rdb.Del(ctx, f.flowKey(id)).Err()
}

// allow counts a send against the limit of one window for what. Keys name
// an address's digest, never the address.
func (f *flows) allow(ctx context.Context, what, value string, limit int, window time.Duration, now time.Time) (bool, error) {
	slot := now.UnixMilli() / window.Milliseconds()
	key := f.prefix + "rate:" + what + ":" + value + ":" + strconv.FormatInt(slot, 10)
	ok, err := f.rate.Run(ctx, f.rdb, []string{key}, limit, window.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("%w: counting a send: %w", ErrUnavailable, err)
	}
	return ok == 1, nil
}

// digest names a counted value in rate-limit keys without storing it: an
// email, or a client address (personal data too, and its plain hash is
// undone by hashing every IPv4 address). Each kind has its MAC domain.
func (f *flows) digest(scope, value string) string {
	h := hmac.New(sha256.New, f.key)
	h.Write([]byte(scope + "\n" + value))
	return hex.EncodeToString(h.Sum(nil)[:16])
}
