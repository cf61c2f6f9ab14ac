// Command gdpr answers GDPR data subject requests (access reports and erasure).
package main

import (
	"os"

	"github.com/gdpr-oss/gdpr/app"
)

func main() {
	os.Exit(app.Execute())
}
