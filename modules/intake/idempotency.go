package intake

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gdpr-oss/gdpr/modules/deadline"
)

// An idempotency record lives in one Redis hash per (caller, key) and moves
// pending → done, or pending → failed → pending (a retry takes it over) →
// done. It remembers the request id and message id it reserved, so a retry
// after a failed or unknown publish re-publishes the very same message and
// consumers deduplicate it; it answers a replay with an id only once that id
// was confirmed by the broker ("done").
//
// Both transitions run as Lua scripts, so two concurrent submissions with the
// same key cannot both reserve an id.

// claimScriptSrc reserves the record or reports its state. A fresh reservation
// also writes the accepted record of its id (KEYS[2]) in the same round
// trip: nobody can ask for that id's status before the confirm reveals it.
// KEYS[1] record, KEYS[2] accepted record; ARGV: fingerprint, id, message_id,
// submitted_at, owner, lease_ms, ttl_s, accepted value, accepted ttl_s, then
// the fingerprints under previous keys (a record written before a key
// rotation still matches).
// Redis's own clock decides lease expiry, so serve replicas' clocks do not matter.
const claimScriptSrc = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  redis.call('HSET', KEYS[1], 'fingerprint', ARGV[1], 'id', ARGV[2], 'message_id', ARGV[3],
    'submitted_at', ARGV[4], 'state', 'pending', 'owner', ARGV[5], 'lease_until', now + tonumber(ARGV[6]))
  redis.call('EXPIRE', KEYS[1], ARGV[7])
  redis.call('SET', KEYS[2], ARGV[8], 'EX', ARGV[9])
  return {'claimed', ARGV[2], ARGV[3], ARGV[4]}
end
local f = redis.call('HMGET', KEYS[1], 'fingerprint', 'id', 'message_id', 'submitted_at', 'lease_until')
local same = f[1] == ARGV[1]
for i = 10, #ARGV do
  if f[1] == ARGV[i] then same = true end
end
if not same then
  return {'conflict', f[2], '', ''}
end
if state == 'done' then
  return {'done', f[2], f[3], f[4]}
end
if state == 'pending' and tonumber(f[5]) > now then
  return {'busy', f[2], '', ''}
end
redis.call('HSET', KEYS[1], 'state', 'pending', 'owner', ARGV[5], 'lease_until', now + tonumber(ARGV[6]))
return {'claimed', f[2], f[3], f[4]}
`

// finishScriptSrc records a publish outcome. KEYS[1] record; ARGV: owner, outcome (done|failed), id.
// "done" is recorded whoever holds the lease: the id is confirmed either way.
// "failed" is recorded only by the current owner, so a slow loser cannot
// undo a taker-over's success.
const finishScriptSrc = `
local f = redis.call('HMGET', KEYS[1], 'owner', 'state', 'id')
if f[3] ~= ARGV[3] then
  return 0
end
if ARGV[2] == 'done' then
  redis.call('HSET', KEYS[1], 'state', 'done')
  return 1
end
if f[1] == ARGV[1] and f[2] == 'pending' then
  redis.call('HSET', KEYS[1], 'state', 'failed')
  return 1
end
return 0
`

type claimOutcome int

const (
	claimed claimOutcome = iota
	claimDone
	claimBusy
	claimConflict
)

// reservation is what a record holds about the request it reserved.
type reservation struct {
	ID          string
	MessageID   string
	SubmittedAt time.Time
	// Client is the submitting client; the record's key is scoped by it,
	// so a record found under the key is that client's too.
	Client string
}

type idempotencyStore struct {
	rdb         redis.Scripter
	prefix      string
	ttl         time.Duration
	lease       time.Duration
	acceptedTTL time.Duration
	// The scripts are built once per store: redis.NewScript hashes its
	// source, and Run sends EVALSHA with that hash.
	claimScript, finishScript *redis.Script
}

func (s idempotencyStore) key(caller, key string) string {
	sum := sha256.Sum256([]byte(caller + "\x00" + key))
	return s.prefix + "idem:" + hex.EncodeToString(sum[:16])
}

// claim reserves recordKey for r (fresh) or reports the record's state; on
// a fresh reservation it writes acceptedKey too.
func (s idempotencyStore) claim(ctx context.Context, recordKey, acceptedKey, acceptedVal, fingerprint string, previous []string, owner string, r reservation) (claimOutcome, reservation, error) {
	args := []any{fingerprint, r.ID, r.MessageID, r.SubmittedAt.UTC().Format(time.RFC3339Nano), owner,
		s.lease.Milliseconds(), int64(s.ttl.Seconds()), acceptedVal, int64(s.acceptedTTL.Seconds())}
	for _, p := range previous {
		args = append(args, p)
	}
	res, err := s.claimScript.Run(ctx, s.rdb, []string{recordKey, acceptedKey}, args...).StringSlice()
	if err != nil {
		return 0, reservation{}, fmt.Errorf("claiming idempotency key: %w", err)
	}
	if len(res) != 4 {
		return 0, reservation{}, fmt.Errorf("claiming idempotency key: unexpected reply %q", res)
	}
	out := reservation{ID: res[1], MessageID: res[2], Client: r.Client}
	if res[3] != "" {
		if out.SubmittedAt, err = time.Parse(time.RFC3339Nano, res[3]); err != nil {
			return 0, reservation{}, fmt.Errorf("claiming idempotency key: bad submitted_at %q", res[3])
		}
	}
	switch res[0] {
	case "claimed":
		return claimed, out, nil
	case "done":
		return claimDone, out, nil
	case "busy":
		return claimBusy, out, nil
	case "conflict":
		return claimConflict, out, nil
	}
	return 0, reservation{}, fmt.Errorf("claiming idempotency key: unexpected outcome %q", res[0])
}

func (s idempotencyStore) finish(ctx context.Context, recordKey, owner, id string, confirmed bool) error {
	outcome := "failed"
	if confirmed {
		outcome = "done"
	}
	if err := s.finishScript.Run(ctx, s.rdb, []string{recordKey}, owner, outcome, id).Err(); err != nil {
		return fmt.Errorf("recording idempotency outcome %s: %w", outcome, err)
	}
	return nil
}

// acceptedValue is the short record of an accepted id, kept until the
// requests manager has surely stored it: "type submitted_at client". A
// record written before requests carried their client has no third field
// (client "").
// acceptedValue is "type unix-nanos client[ regulation]": the regulation
// is written only when it is not GDPR's, so a record written before it
// was (or by an older replica) still reads as GDPR.
func acceptedValue(typ string, submittedAt time.Time, client, regulation string) string {
	v := typ + " " + strconv.FormatInt(submittedAt.UnixNano(), 10) + " " + client
	if regulation != "" && regulation != string(deadline.GDPR) {
		v += " " + regulation
	}
	return v
}

func parseAccepted(v string) (typ string, submittedAt time.Time, client, regulation string, ok bool) {
	typ, rest, found := strings.Cut(v, " ")
	if !found {
		return "", time.Time{}, "", "", false
	}
	ns, rest, _ := strings.Cut(rest, " ")
	n, err := strconv.ParseInt(ns, 10, 64)
	if err != nil {
		return "", time.Time{}, "", "", false
	}
	client, regulation, _ = strings.Cut(rest, " ")
	return typ, time.Unix(0, n).UTC(), client, regulation, true
}
