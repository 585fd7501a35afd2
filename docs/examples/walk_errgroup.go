// Go: a tree walk on an errgroup with SetLimit. Each task calls g.Go for its
// children, and g.Go blocks while 8 tasks run: once the 8 running tasks all wait
// there for a slot that only a running task can free, nothing moves. A deadlock.
g, ctx := errgroup.WithContext(ctx)
g.SetLimit(8)
var visit func(dir string) error
visit = func(dir string) error {
    subdirs, err := list(ctx, dir)
    if err != nil {
        return err
    }
    for _, sub := range subdirs {
        g.Go(func() error { return visit(sub) })   // may wait forever
    }
    return nil
}
g.Go(func() error { return visit(root) })
err := g.Wait()

// The cure: TryGo, and when no slot is free, run the child here, depth first.
for _, sub := range subdirs {
    if !g.TryGo(func() error { return visit(sub) }) {
        if err := visit(sub); err != nil {
            return err
        }
    }
}
