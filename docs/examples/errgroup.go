// Go: errgroup.WithContext and SetLimit.
g, ctx := errgroup.WithContext(ctx)
g.SetLimit(8)
results := make([]string, len(urls))
for i, url := range urls {
    g.Go(func() error {            // blocks while 8 run
        page, err := fetch(ctx, url) // ctx is cancelled at the first error
        results[i] = page
        return err
    })
}
if err := g.Wait(); err != nil {   // the first error
    return err
}
if g.TryGo(extra) { ... }          // false when the limit is reached
