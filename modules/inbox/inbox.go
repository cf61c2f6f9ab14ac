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
