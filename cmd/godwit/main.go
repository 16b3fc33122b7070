// Command godwit is a KVM virtual machine monitor built for live migration.
// Its subcommands run a VM (run), control a running one (ctl), and, in later
// versions, migrate it between hosts.
package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(runApp(os.Args))
}

// runApp runs the CLI and turns every error into one line on stderr and a
// non-zero exit code.
func runApp(args []string) int {
	if stop := startCPUProfile(os.Getenv("GODWIT_CPUPROFILE")); stop != nil {
		defer stop()
	}
	app := &cli.App{
		Name:    "godwit",
		Usage:   "a KVM virtual machine monitor built for live migration",
		Version: version,
		Commands: []*cli.Command{
			runCommand(),
			ctlCommand(),
			demoCommand(),
			migrateCommand(),
			receiveCommand(),
			pingpongCommand(),
			benchCommand(),
		},
		OnUsageError: usageError,
		// Repeatable flags take one value per use: --disk
		// path=F,readonly=on must not split at the comma.
		DisableSliceFlagSeparator: true,
		CommandNotFound: func(_ *cli.Context, name string) {
			fmt.Fprintf(os.Stderr, "godwit: unknown command %q; see 'godwit --help'\n", name)
			os.Exit(2)
		},
		// Errors are printed once, by runApp.
		ExitErrHandler: func(*cli.Context, error) {},
	}
	for _, c := range app.Commands {
		c.OnUsageError = usageError
	}
	if err := app.Run(args); err != nil {
		fmt.Fprintf(os.Stderr, "godwit: %v\n", err)
		var ec cli.ExitCoder
		if errors.As(err, &ec) && ec.ExitCode() != 0 {
			return ec.ExitCode()
		}
		return 1
	}
	return 0
}

// startCPUProfile writes a CPU profile of this process to PREFIX.PID when
// GODWIT_CPUPROFILE=PREFIX is set (the PID keeps the source and the
// receiver of a local migration apart), for `go tool pprof`. It returns
// the function that ends the profile, or nil when none was started; a
// profile that cannot be started is reported and the command runs anyway.
func startCPUProfile(prefix string) func() {
	if prefix == "" {
		return nil
	}
	f, err := os.Create(prefix + "." + strconv.Itoa(os.Getpid()))
	if err == nil {
		err = pprof.StartCPUProfile(f)
		if err != nil {
			f.Close()
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "godwit: GODWIT_CPUPROFILE: %v\n", err)
		return nil
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// usageError reports a bad flag or argument as one line.
func usageError(_ *cli.Context, err error, _ bool) error {
	return cli.Exit(err.Error(), 2)
}

// newLogger returns a text logger on stderr at the named level.
func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}
