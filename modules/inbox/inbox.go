// Package inbox makes message handling idempotent: a consumer records each
// message id in the same transaction as the message's effect.
package inbox

import (
	"context"
	"fmt"
	"strings"

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

// ClaimAll is Claim for several message ids in one statement. It returns the
// ids recorded now, each once; an id absent from it was recorded before (or
// is a repeat within messageIDs) and its effect must not happen again.
func ClaimAll(ctx context.Context, tx *gorm.DB, consumer string, messageIDs []string) (map[string]bool, error) {
	fresh := make(map[string]bool, len(messageIDs))
	if len(messageIDs) == 0 {
		return fresh, nil
	}
	var sb strings.Builder
	args := make([]any, 0, 2*len(messageIDs))
	for i, id := range messageIDs {
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString("(?, ?)")
		args = append(args, consumer, id)
	}
	var claimed []string
	err := tx.WithContext(ctx).Raw(
		`INSERT INTO inbox (consumer, message_id) VALUES `+sb.String()+` ON CONFLICT DO NOTHING RETURNING message_id`,
		args...).Scan(&claimed).Error
	if err != nil {
		return nil, fmt.Errorf("recording %d messages in inbox: %w", len(messageIDs), err)
	}
	for _, id := range claimed {
		fresh[id] = true
	}
	return fresh, nil
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
