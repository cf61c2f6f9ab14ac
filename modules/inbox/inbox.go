// Package inbox makes message handling idempotent: a consumer records each
// message id in the same transaction as the message's effect.
package inbox

import (
	"context"
	"fmt"

	"gorm.io/gorm"
)

// Claim records messageID for consumer inside tx. It returns false when the
// id was already recorded: the effect was committed before and the caller
// must do nothing but acknowledge.
func Claim(ctx context.Context, tx *gorm.DB, consumer, messageID string) (bool, error) {
	res := tx.WithContext(ctx).Exec(
		`INSERT INTO inbox (consumer, message_id) VALUES (?, ?) ON CONFLICT DO NOTHING`,
		consumer, messageID)
	if res.Error != nil {
		return false, fmt.Errorf("recording message %s in inbox: %w", messageID, res.Error)
	}
	return res.RowsAffected == 1, nil
}

// ClaimSQL is Claim as a statement to run inside a caller's data-modifying
// WITH clause: it returns one row when messageID is fresh for consumer and
// none when it was recorded before, so the caller's effect can be guarded by
// `WHERE EXISTS (SELECT 1 FROM <its name>)` and commit in the same round
// trip as the record.
func ClaimSQL(consumer, messageID string) (string, []any) {
	return `INSERT INTO inbox (consumer, message_id) VALUES (?, ?) ON CONFLICT DO NOTHING RETURNING 1`,
		[]any{consumer, messageID}
}
