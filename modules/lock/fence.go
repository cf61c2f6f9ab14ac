package lock

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// ErrFenced means the caller's lease on a row is gone (expired and possibly
// taken by another worker): it must not write.
var ErrFenced = errors.New("lock: lease lost, write fenced off")

// Fence guards rows of one table with a lease: a token column incremented on
// every claim and an expiry by the database clock. The table needs columns
// lease_token bigint NOT NULL DEFAULT 0 and lease_until timestamptz.
//
// Times are clock_timestamp(), not now(): now() is frozen at the start of
// the transaction, so a long transaction would judge a lease by a stale clock.
type Fence struct {
	// Table is the table's name; it is written into SQL, never user input.
	Table string
	// Key is the primary key column; default "id".
	Key string
}

func (f Fence) key() string {
	if f.Key == "" {
		return "id"
	}
	return f.Key
}

// Claim takes the lease on row id for ttl if it is free or expired and
// returns the new token.
func (f Fence) Claim(ctx context.Context, tx *gorm.DB, id any, ttl time.Duration) (int64, error) {
	var token int64
	res := tx.WithContext(ctx).Raw(
		`UPDATE `+f.Table+` SET lease_token = lease_token + 1, lease_until = clock_timestamp() + make_interval(secs => ?)
		 WHERE `+f.key()+` = ? AND (lease_until IS NULL OR lease_until < clock_timestamp())
		 RETURNING lease_token`, ttl.Seconds(), id).Scan(&token)
	if res.Error != nil {
		return 0, fmt.Errorf("claiming %s %v: %w", f.Table, id, res.Error)
	}
	if res.RowsAffected == 0 {
		return 0, ErrFenced
	}
	return token, nil
}

// Extend renews the lease while the caller still holds token.
func (f Fence) Extend(ctx context.Context, tx *gorm.DB, id any, token int64, ttl time.Duration) error {
	res := tx.WithContext(ctx).Exec(
		`UPDATE `+f.Table+` SET lease_until = clock_timestamp() + make_interval(secs => ?)
		 WHERE `+f.key()+` = ? AND lease_token = ? AND lease_until >= clock_timestamp()`, ttl.Seconds(), id, token)
	if res.Error != nil {
		return fmt.Errorf("extending lease on %s %v: %w", f.Table, id, res.Error)
	}
	if res.RowsAffected == 0 {
		return ErrFenced
	}
	return nil
}

// Check locks row id inside tx and verifies the caller still holds token
// and the lease has not expired. Writes made in tx after a successful Check
// commit only under the lease: the row lock keeps anyone from claiming it
// until tx ends.
func (f Fence) Check(ctx context.Context, tx *gorm.DB, id any, token int64) error {
	var ok bool
	res := tx.WithContext(ctx).Raw(
		`SELECT coalesce(lease_token = ? AND lease_until >= clock_timestamp(), false) FROM `+f.Table+` WHERE `+f.key()+` = ? FOR UPDATE`,
		token, id).Scan(&ok)
	if res.Error != nil {
		return fmt.Errorf("checking lease on %s %v: %w", f.Table, id, res.Error)
	}
	if res.RowsAffected == 0 || !ok {
		return ErrFenced
	}
	return nil
}

// Release ends the lease held with token; it does nothing if the lease was
// lost, so it never frees a lease someone else claimed since.
func (f Fence) Release(ctx context.Context, tx *gorm.DB, id any, token int64) error {
	res := tx.WithContext(ctx).Exec(
		`UPDATE `+f.Table+` SET lease_until = NULL WHERE `+f.key()+` = ? AND lease_token = ?`, id, token)
	if res.Error != nil {
		return fmt.Errorf("releasing lease on %s %v: %w", f.Table, id, res.Error)
	}
	return nil
}
