package selfservice

import (
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Shipped locales.
const (
	LocaleEnglish = "en"
	LocaleGerman  = "de"
)

// Locales lists the shipped locales.
func Locales() []string { return []string{LocaleEnglish, LocaleGerman} }

// Supported maps a language tag ("de-AT", "EN") to a shipped locale, or "".
func Supported(tag string) string {
	base, _, _ := strings.Cut(strings.ToLower(strings.TrimSpace(tag)), "-")
	if slices.Contains(Locales(), base) {
		return base
	}
	return ""
}

// Negotiate picks a shipped locale from an Accept-Language header, else def.
func Negotiate(acceptLanguage, def string) string {
	type choice struct {
		locale string
		q      float64
		i      int
	}
	var choices []choice
	for i, part := range strings.Split(acceptLanguage, ",") {
		tag, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		q := 1.0
		if v, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				continue
			}
			q = f
		}
		if l := Supported(tag); l != "" && q > 0 {
			choices = append(choices, choice{l, q, i})
		}
	}
	sort.SliceStable(choices, func(a, b int) bool { return choices[a].q > choices[b].q })
	if len(choices) > 0 {
		return choices[0].locale
	}
	return def
}

// catalog holds every text of the pages per locale; templates look keys up
// with {{t "key"}}. A key missing from a locale falls back to English.
func catalog() map[string]map[string]string {
	return map[string]map[string]string{
		LocaleEnglish: {
			"lang.name":           "English",
			"title":               "Your personal data",
			"intro":               "Ask for a copy of the personal data we hold about you, or for its erasure. We first check that the email address is yours.",
			"kind":                "What would you like?",
			"kind.access":         "A copy of my data",
			"kind.erasure":        "Erase my data",
			"email":               "Email address",
			"continue":            "Send me a code",
			"sent.title":          "Check your email",
			"sent.body":           "If this address can receive email, we sent a 6-digit code to it. It works for {minutes} minutes. You can also follow the link in the email instead.",
			"code":                "Verification code",
			"verify":              "Confirm",
			"wrong":               "That code is not right. Tries left:",
			"link.title":          "Confirm your request",
			"link.body":           "Press the button to confirm the request you started with this link.",
			"receipt.title":       "Request received",
			"receipt.body":        "We received your request and emailed you a receipt with a link to follow it.",
			"request.id":          "Request id",
			"request.type":        "Request",
			"request.state":       "State",
			"request.deadline":    "We must answer by",
			"request.done":        "Completed",
			"status.title":        "Your request",
			"status.link":         "Follow your request",
			"state.submitted":     "submitted",
			"state.received":      "received",
			"state.processing":    "being processed",
			"state.handed_over":   "being erased in our systems",
			"state.completed":     "completed",
			"state.failed":        "failed; we will contact you",
			"state.denied":        "declined; we emailed you why",
			"state.cancelled":     "withdrawn",
			"download.title":      "Your data is ready",
			"download.body":       "The download is a ZIP archive: for every system that holds data about you, one JSON and one CSV file, and a manifest listing what is inside.",
			"download.until":      "This link works until",
			"download.contents":   "What the archive holds: each system we searched, with the number of records about you (its files are named after it).",
			"download.source":     "System",
			"download.records":    "Records",
			"download.skipped":    "not searched: it needs an identifier we do not have for you",
			"download.button":     "Download my data",
			"download.page":       "Go to the download page",
			"deleted.title":       "Your report was deleted",
			"deleted.erasure":     "The report was deleted at your own request, when your personal data was erased",
			"deleted.retention":   "The report was deleted once its download period was over",
			"deleted.again":       "You can ask for a new copy at any time.",
			"gone.title":          "This link no longer works",
			"gone.body":           "The link has expired, was already used, or was withdrawn. You can ask again at any time.",
			"withdrawn.title":     "This request was withdrawn",
			"withdrawn.body":      "This request was withdrawn and will not be answered. If you still want a copy or the erasure of your data, you can ask again at any time.",
			"again":               "Ask again",
			"problem.title":       "Something went wrong",
			"problem.csrf":        "The form has expired. Please load the page again.",
			"problem.void":        "Too many wrong codes: this code no longer works. Please ask for a new one.",
			"problem.expired":     "The code has expired. Please ask for a new one.",
			"problem.invalid":     "Please check your input:",
			"problem.unavailable": "We cannot take your request right now. Please try again in a few minutes.",
		},
		LocaleGerman: {
			"lang.name":           "Deutsch",
			"title":               "Ihre personenbezogenen Daten",
			"intro":               "Fordern Sie eine Kopie der personenbezogenen Daten an, die wir über Sie speichern, oder deren Löschung. Zuerst prüfen wir, dass die E-Mail-Adresse Ihnen gehört.",
			"kind":                "Was möchten Sie?",
			"kind.access":         "Eine Kopie meiner Daten",
			"kind.erasure":        "Meine Daten löschen",
			"email":               "E-Mail-Adresse",
			"continue":            "Code senden",
			"sent.title":          "Bitte prüfen Sie Ihre E-Mails",
			"sent.body":           "Wenn diese Adresse E-Mails empfangen kann, haben wir ihr einen 6-stelligen Code geschickt. Er gilt {minutes} Minuten. Sie können stattdessen auch dem Link in der E-Mail folgen.",
			"code":                "Bestätigungscode",
			"verify":              "Bestätigen",
			"wrong":               "Dieser Code stimmt nicht. Verbleibende Versuche:",
			"link.title":          "Anfrage bestätigen",
			"link.body":           "Drücken Sie die Schaltfläche, um die Anfrage zu bestätigen, die Sie mit diesem Link begonnen haben.",
			"receipt.title":       "Anfrage erhalten",
			"receipt.body":        "Wir haben Ihre Anfrage erhalten und Ihnen eine Bestätigung mit einem Link geschickt, unter dem Sie sie verfolgen können.",
			"request.id":          "Anfragenummer",
			"request.type":        "Anfrage",
			"request.state":       "Stand",
			"request.deadline":    "Wir müssen antworten bis",
			"request.done":        "Abgeschlossen",
			"status.title":        "Ihre Anfrage",
			"status.link":         "Anfrage verfolgen",
			"state.submitted":     "eingereicht",
			"state.received":      "eingegangen",
			"state.processing":    "in Bearbeitung",
			"state.handed_over":   "wird in unseren Systemen gelöscht",
			"state.completed":     "abgeschlossen",
			"state.failed":        "fehlgeschlagen; wir melden uns bei Ihnen",
			"state.denied":        "abgelehnt; wir haben Ihnen die Gründe per E-Mail geschickt",
			"state.cancelled":     "zurückgezogen",
			"download.title":      "Ihre Daten sind bereit",
			"download.body":       "Der Download ist ein ZIP-Archiv: für jedes System, das Daten über Sie speichert, eine JSON- und eine CSV-Datei sowie ein Verzeichnis des Inhalts.",
			"download.until":      "Dieser Link funktioniert bis",
			"download.contents":   "Inhalt des Archivs: jedes durchsuchte System mit der Zahl der Einträge über Sie (seine Dateien tragen seinen Namen).",
			"download.source":     "System",
			"download.records":    "Einträge",
			"download.skipped":    "nicht durchsucht: dafür fehlt uns eine Kennung von Ihnen",
			"download.button":     "Meine Daten herunterladen",
			"download.page":       "Zur Download-Seite",
			"deleted.title":       "Ihr Bericht wurde gelöscht",
			"deleted.erasure":     "Der Bericht wurde auf Ihren eigenen Wunsch gelöscht, als Ihre personenbezogenen Daten gelöscht wurden",
			"deleted.retention":   "Der Bericht wurde nach Ablauf der Download-Frist gelöscht",
			"deleted.again":       "Sie können jederzeit eine neue Kopie anfordern.",
			"gone.title":          "Dieser Link funktioniert nicht mehr",
			"gone.body":           "Der Link ist abgelaufen, wurde schon benutzt oder wurde zurückgezogen. Sie können jederzeit erneut fragen.",
			"withdrawn.title":     "Diese Anfrage wurde zurückgezogen",
			"withdrawn.body":      "Diese Anfrage wurde zurückgezogen und wird nicht weiter beantwortet. Wenn Sie weiterhin eine Kopie oder die Löschung Ihrer Daten möchten, können Sie jederzeit erneut fragen.",
			"again":               "Erneut fragen",
			"problem.title":       "Etwas ist schiefgegangen",
			"problem.csrf":        "Das Formular ist abgelaufen. Bitte laden Sie die Seite neu.",
			"problem.void":        "Zu viele falsche Codes: Dieser Code gilt nicht mehr. Bitte fordern Sie einen neuen an.",
			"problem.expired":     "Der Code ist abgelaufen. Bitte fordern Sie einen neuen an.",
			"problem.invalid":     "Bitte prüfen Sie Ihre Eingabe:",
			"problem.unavailable": "Wir können Ihre Anfrage gerade nicht annehmen. Bitte versuchen Sie es in ein paar Minuten erneut.",
		},
	}
}
