"""joblib: Parallel and delayed."""

from joblib import Parallel, delayed


def square(x):
    return x * x


if __name__ == "__main__":
    print(sum(Parallel(n_jobs=2)(delayed(square)(n) for n in range(1000))))
    print(Parallel(n_jobs=4, prefer="threads")(delayed(square)(n) for n in range(5)))
    results = Parallel(n_jobs=2, return_as="generator")(delayed(square)(n) for n in range(5))
    print(list(results))
